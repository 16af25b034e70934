{#- The per-metric columns of klaviyo__person_campaign_flow and its rollups, from the metric lists in vars:
    count_<metric> for klaviyo__count_metrics, sum_revenue_<metric> for klaviyo__sum_revenue_metrics. -#}

{% macro count_columns() -%}
    {%- set names = [] -%}
    {%- for m in var('klaviyo__count_metrics') -%}{%- do names.append('count_' ~ klaviyo.slug(m)) -%}{%- endfor -%}
    {{ return(names) }}
{%- endmacro %}

{% macro revenue_columns() -%}
    {%- set names = [] -%}
    {%- for m in var('klaviyo__sum_revenue_metrics') -%}{%- do names.append('sum_revenue_' ~ klaviyo.slug(m)) -%}{%- endfor -%}
    {{ return(names) }}
{%- endmacro %}

{#- One row per campaign or flow (`owner`; deleted ones left out) with its descriptive `columns`: what it
    earned (the order metric's attributed conversions) and, per metric of the pivot lists, events and unique
    people credited to it. -#}
{% macro owner_rollup(owner, columns) -%}
with people as (
    -- each person's sums per campaign or flow (over its variations), so that people with a metric are counted
    -- with plain counts, not a distinct count per metric
    select
        {{ owner }}_id,
        person_id,
        min(first_event_at) as first_event_at,
        max(last_event_at) as last_event_at,
        {%- for c in klaviyo.count_columns() + klaviyo.revenue_columns() %}
        sum({{ c }}) as {{ c }},
        {%- endfor %}
        sum(count_events) as count_events
    from {{ ref('klaviyo__person_campaign_flow') }}
    where {{ owner }}_id is not null
    group by {{ owner }}_id, person_id
),

variations as (
    select {{ owner }}_id, count(distinct variation_id) as variation_count
    from {{ ref('klaviyo__person_campaign_flow') }}
    where {{ owner }}_id is not null
    group by {{ owner }}_id
),

credited as (
    select
        p.{{ owner }}_id,
        count(p.person_id) as total_count_unique_people,
        max(v.variation_count) as variation_count,
        min(p.first_event_at) as first_event_at,
        max(p.last_event_at) as last_event_at,
        {%- for c in klaviyo.count_columns() %}
        coalesce(sum(p.{{ c }}), 0) as {{ c }},
        count(case when p.{{ c }} > 0 then p.person_id end) as unique_{{ c }},
        {%- endfor %}
        {%- for c in klaviyo.revenue_columns() %}
        coalesce(sum(p.{{ c }}), 0) as {{ c }},
        {%- endfor %}
        sum(p.count_events) as count_events
    from people as p
    join variations as v on v.{{ owner }}_id = p.{{ owner }}_id
    group by p.{{ owner }}_id
),

orders as (
    select
        {{ owner }}_id,
        count(*) as attributed_orders,
        count(distinct person_id) as attributed_customers,
        coalesce(sum(numeric_value), 0) as attributed_revenue
    from {{ ref('klaviyo__events') }}
    where {{ owner }}_id is not null
        and attribution_source in ('native', 'session')
        and lower(metric_name) = {{ klaviyo.literal(var('klaviyo__order_metric') | lower) }}
    group by {{ owner }}_id
)

select
    c.{{ owner }}_id,
    {%- for column in columns %}
    c.{{ column }},
    {%- endfor %}
    coalesce(o.attributed_orders, 0) as attributed_orders,
    coalesce(o.attributed_customers, 0) as attributed_customers,
    coalesce(o.attributed_revenue, 0) as attributed_revenue,
    coalesce(m.total_count_unique_people, 0) as total_count_unique_people,
    coalesce(m.variation_count, 0) as variation_count,
    m.first_event_at,
    m.last_event_at,
    {%- for col in klaviyo.count_columns() %}
    coalesce(m.{{ col }}, 0) as {{ col }},
    coalesce(m.unique_{{ col }}, 0) as unique_{{ col }},
    {%- endfor %}
    {%- for col in klaviyo.revenue_columns() %}
    coalesce(m.{{ col }}, 0) as {{ col }},
    {%- endfor %}
    coalesce(m.count_events, 0) as count_events
from {{ ref('stg_klaviyo__' ~ owner ~ 's') }} as c
left join credited as m on m.{{ owner }}_id = c.{{ owner }}_id
left join orders as o on o.{{ owner }}_id = c.{{ owner }}_id
where c.deleted_at is null
{%- endmacro %}

{#- Daily members added, removed, net and total of each list or segment (`kind`) from its memberships, from its
    first join to the latest membership change of any group, days in the account's timezone. Klaviyo keeps
    only a member's latest join, so someone who left and came back counts once, on the day they came back.
    With `reports` (a relation of Klaviyo's daily figures: kind_id, day, members_added, members_removed,
    net_members_changed, total_members) its figures stand beside ours as reported_*, over its days too. -#}
{% macro membership_growth(kind, reports=none) -%}
with members as (
    select
        m.{{ kind }}_id,
        {{ klaviyo.local_date('m.joined_at') }} as joined_on,
        {{ klaviyo.local_date('m.removed_at') }} as removed_on
    from {{ ref('stg_klaviyo__' ~ kind ~ '_members') }} as m
    join {{ ref('stg_klaviyo__profiles') }} as p on p.person_id = m.person_id and p.deleted_at is null
    where m.joined_at is not null
),

changes as (
    select {{ kind }}_id, joined_on as day, 1 as added, 0 as removed from members
    union all
    select {{ kind }}_id, removed_on as day, 0 as added, 1 as removed from members where removed_on is not null
),

daily as (
    select {{ kind }}_id, day, sum(added) as members_added, sum(removed) as members_removed
    from changes
    group by {{ kind }}_id, day
),

known_days as (
    select {{ kind }}_id, day from changes
    {%- if reports %}
    union all
    select {{ kind }}_id, day from {{ reports }}
    {%- endif %}
),

bounds as (
    select {{ kind }}_id, min(day) as first_day, (select max(day) from known_days) as last_day
    from known_days
    group by {{ kind }}_id
),

days as (
    select b.{{ kind }}_id, cast(s.step_start as date) as day
    from bounds as b
    {{ klaviyo.series('b.first_day', 'b.last_day', '1 day', 's') }}
)

select
    {{ klaviyo.key(['d.' ~ kind ~ '_id', 'd.day']) }} as {{ kind }}_day_key,
    d.{{ kind }}_id,
    g.{{ kind }}_name,
    d.day,
    coalesce(c.members_added, 0) as members_added,
    coalesce(c.members_removed, 0) as members_removed,
    coalesce(c.members_added, 0) - coalesce(c.members_removed, 0) as net_members_changed,
    sum(coalesce(c.members_added, 0) - coalesce(c.members_removed, 0)) over (
        partition by d.{{ kind }}_id order by d.day rows between unbounded preceding and current row
    ) as total_members
    {%- if reports %},
    r.members_added as reported_members_added,
    r.members_removed as reported_members_removed,
    r.net_members_changed as reported_net_members_changed,
    r.total_members as reported_total_members
    {%- endif %}
from days as d
join {{ ref('stg_klaviyo__' ~ kind ~ 's') }} as g on g.{{ kind }}_id = d.{{ kind }}_id and g.deleted_at is null
left join daily as c on c.{{ kind }}_id = d.{{ kind }}_id and c.day = d.day
{%- if reports %}
left join {{ reports }} as r on r.{{ kind }}_id = d.{{ kind }}_id and r.day = d.day
{%- endif %}
{%- endmacro %}
