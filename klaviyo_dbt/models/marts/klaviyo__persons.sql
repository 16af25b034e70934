{#- One row per profile (deleted ones left out): who they are, their consent per channel, their orders and
    revenue (lifetime, attributed to campaigns and flows, organic), RFM scores, and per-metric totals. -#}
{%- set order_metric = klaviyo.literal(var('klaviyo__order_metric') | lower) -%}
with credited as (
    select
        person_id,
        count(distinct campaign_id) as count_total_campaigns,
        count(distinct flow_id) as count_total_flows,
        min(first_event_at) as first_event_at,
        max(last_event_at) as last_event_at,
        min(case when campaign_id is not null then first_event_at end) as first_campaign_touch_at,
        max(case when campaign_id is not null then last_event_at end) as last_campaign_touch_at,
        min(case when flow_id is not null then first_event_at end) as first_flow_touch_at,
        max(case when flow_id is not null then last_event_at end) as last_flow_touch_at,
        {%- for c in klaviyo.count_columns() %}
        sum({{ c }}) as total_{{ c }},
        {%- endfor %}
        {%- for c in klaviyo.revenue_columns() %}
        sum({{ c }}) as total_{{ c }},
        sum(case when campaign_id is null and flow_id is null then {{ c }} else 0 end) as organic_{{ c }},
        {%- endfor %}
        sum(count_events) as total_count_events
    from {{ ref('klaviyo__person_campaign_flow') }}
    where person_id is not null
    group by person_id
),

orders as (
    select
        person_id,
        count(*) as order_count,
        min(occurred_at) as first_order_at,
        max(occurred_at) as last_order_at,
        coalesce(sum(numeric_value), 0) as lifetime_revenue,
        coalesce(sum(case when attribution_source in ('native', 'session') then numeric_value end), 0)
            as attributed_revenue,
        coalesce(sum(case when attribution_source in ('native', 'session') and campaign_id is not null
                          then numeric_value end), 0) as campaign_revenue,
        coalesce(sum(case when attribution_source in ('native', 'session') and flow_id is not null
                          then numeric_value end), 0) as flow_revenue
    from {{ ref('klaviyo__events') }}
    where person_id is not null and lower(metric_name) = {{ order_metric }}
    group by person_id
),

-- recency, frequency, monetary value in quintiles of the people who ordered (5 best); ties share the score of
-- the first of them (when most people ordered once, once is frequency 1)
rfm as (
    select
        person_id,
        {%- for score, column in [('recency', 'last_order_at'), ('frequency', 'order_count'),
                                  ('monetary', 'lifetime_revenue')] %}
        cast(least(5, 1 + floor(5 * percent_rank() over (order by {{ column }}))) as integer) as {{ score }}_score
            {{- "," if not loop.last }}
        {%- endfor %}
    from orders
),

as_of as (
    select {{ klaviyo.local_date('max(occurred_at)') }} as day from {{ ref('klaviyo__events') }}
)

select
    p.person_id,
    p.email,
    p.phone_number,
    p.external_id,
    p.first_name,
    p.last_name,
    p.organization,
    p.title,
    p.locale,
    p.city,
    p.region,
    p.country,
    p.zip,
    p.timezone,
    p.created_at,
    p.updated_at,
    p.last_event_date,
    p.email_marketing_consent,
    coalesce(p.can_receive_email_marketing, false) as can_receive_email_marketing,
    p.email_marketing_consent_at,
    p.email_suppression_reason,
    p.sms_marketing_consent,
    coalesce(p.can_receive_sms_marketing, false) as can_receive_sms_marketing,
    p.sms_marketing_consent_at,
    p.push_marketing_consent,
    coalesce(p.can_receive_push_marketing, false) as can_receive_push_marketing,
    coalesce(o.order_count, 0) as order_count,
    o.first_order_at,
    o.last_order_at,
    coalesce(o.lifetime_revenue, 0) as lifetime_revenue,
    coalesce(o.attributed_revenue, 0) as attributed_revenue,
    coalesce(o.lifetime_revenue, 0) - coalesce(o.attributed_revenue, 0) as organic_revenue,
    coalesce(o.campaign_revenue, 0) as campaign_revenue,
    coalesce(o.flow_revenue, 0) as flow_revenue,
    case when o.order_count > 0 then o.lifetime_revenue / o.order_count end as average_order_value,
    (select day from as_of) - {{ klaviyo.local_date('o.last_order_at') }} as days_since_last_order,
    r.recency_score,
    r.frequency_score,
    r.monetary_score,
    cast(r.recency_score as text) || cast(r.frequency_score as text) || cast(r.monetary_score as text) as rfm_segment,
    coalesce(m.count_total_campaigns, 0) as count_total_campaigns,
    coalesce(m.count_total_flows, 0) as count_total_flows,
    m.first_event_at,
    m.last_event_at,
    m.first_campaign_touch_at,
    m.last_campaign_touch_at,
    m.first_flow_touch_at,
    m.last_flow_touch_at,
    {%- for c in klaviyo.count_columns() %}
    coalesce(m.total_{{ c }}, 0) as total_{{ c }},
    {%- endfor %}
    {%- for c in klaviyo.revenue_columns() %}
    coalesce(m.total_{{ c }}, 0) as total_{{ c }},
    coalesce(m.organic_{{ c }}, 0) as organic_{{ c }},
    {%- endfor %}
    coalesce(m.total_count_events, 0) as total_count_events
from {{ ref('stg_klaviyo__profiles') }} as p
left join credited as m on m.person_id = p.person_id
left join orders as o on o.person_id = p.person_id
left join rfm as r on r.person_id = p.person_id
where p.deleted_at is null
