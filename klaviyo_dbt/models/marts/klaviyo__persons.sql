{#- One row per profile (deleted ones left out): who they are, their consent per channel, their orders and
    revenue (lifetime, attributed to campaigns and flows, organic), RFM scores, and per-metric totals.

    Incremental by person (macros/incremental.sql): a run recomputes the people whose klaviyo__person_campaign_flow
    rows were written since its last build, whose profile was loaded since, or who have no event left; deleted
    profiles are deleted. RFM scores and days since the last order rank everyone who ordered, so they are set over
    the whole table after every build (macros/persons.sql). -#}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='person_id',
    on_schema_change='fail',
    post_hook=[
        "{{ klaviyo.drop_vanished('person_id', ref('stg_klaviyo__profiles'), 'live.deleted_at is null') }}",
        "{{ klaviyo.score_persons() }}",
    ],
) }}
{%- set order_metric = klaviyo.literal(var('klaviyo__order_metric') | lower) -%}
{%- set pcf = ref('klaviyo__person_campaign_flow') -%}
{%- set only_changed = 'and person_id in (select person_id from changed)' if is_incremental() else '' -%}
with
{%- if is_incremental() %}
changed as (
    select person_id from {{ pcf }}
    where coalesce(_processed_through_load_id, '~') > {{ klaviyo.watermark() }}
    union
    select person_id from {{ ref('stg_klaviyo__profiles') }}
    where coalesce(load_id, '~') > {{ klaviyo.watermark() }}
    union
    select t.person_id from {{ this }} as t
    where t.total_count_events > 0 and not exists (select 1 from {{ pcf }} as c where c.person_id = t.person_id)
),
{%- endif %}

credited as (
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
    from {{ pcf }}
    where person_id is not null {{ only_changed }}
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
    where person_id is not null and lower(metric_name) = {{ order_metric }} {{ only_changed }}
    group by person_id
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
    -- set after the build over the whole table (macros/persons.sql)
    cast(null as integer) as days_since_last_order,
    cast(null as integer) as recency_score,
    cast(null as integer) as frequency_score,
    cast(null as integer) as monetary_score,
    cast(null as text) as rfm_segment,
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
    coalesce(m.total_count_events, 0) as total_count_events,
    coalesce({{ klaviyo.latest_completed_load() }}, (select max(_processed_through_load_id) from {{ pcf }}))
        as _processed_through_load_id
from {{ ref('stg_klaviyo__profiles') }} as p
left join credited as m on m.person_id = p.person_id
left join orders as o on o.person_id = p.person_id
where p.deleted_at is null {{ only_changed | replace('person_id', 'p.person_id', 1) }}
