{#- Monthly acquisition cohorts: people grouped by the month (account timezone) of their first order, and for
    every month since, how many of them ordered, their orders and revenue, retention and cumulative value. -#}
with orders as (
    select person_id, {{ klaviyo.month_start(klaviyo.local_date('occurred_at')) }} as order_month, numeric_value
    from {{ ref('klaviyo__events') }}
    where person_id is not null
        and lower(metric_name) = {{ klaviyo.literal(var('klaviyo__order_metric') | lower) }}
),

firsts as (
    select person_id, min(order_month) as cohort_month from orders group by person_id
),

cohorts as (
    select cohort_month, count(*) as cohort_size from firsts group by cohort_month
),

activity as (
    select
        f.cohort_month,
        o.order_month,
        count(distinct o.person_id) as active_customers,
        count(*) as orders,
        coalesce(sum(o.numeric_value), 0) as revenue
    from orders as o
    join firsts as f on f.person_id = o.person_id
    group by f.cohort_month, o.order_month
),

months as (
    select c.cohort_month, cast(s.step_start as date) as order_month
    from cohorts as c
    {{ klaviyo.series('c.cohort_month', '(select max(order_month) from orders)', '1 month', 's') }}
)

select
    {{ klaviyo.key(['m.cohort_month', 'm.order_month']) }} as cohort_month_key,
    m.cohort_month,
    m.order_month,
    {{ klaviyo.months_between('m.cohort_month', 'm.order_month') }} as months_since_first_order,
    c.cohort_size,
    coalesce(a.active_customers, 0) as active_customers,
    {{ klaviyo.ratio('coalesce(a.active_customers, 0)', 'c.cohort_size') }} as retention_rate,
    coalesce(a.orders, 0) as orders,
    coalesce(a.revenue, 0) as revenue,
    sum(coalesce(a.revenue, 0)) over (
        partition by m.cohort_month order by m.order_month rows between unbounded preceding and current row
    ) as cumulative_revenue,
    sum(coalesce(a.revenue, 0)) over (
        partition by m.cohort_month order by m.order_month rows between unbounded preceding and current row
    ) / c.cohort_size as cumulative_revenue_per_customer
from months as m
join cohorts as c on c.cohort_month = m.cohort_month
left join activity as a on a.cohort_month = m.cohort_month and a.order_month = m.order_month
