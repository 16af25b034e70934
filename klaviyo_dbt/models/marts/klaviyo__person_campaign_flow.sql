{#- One row per person and what their events are credited to (campaign or flow, and variation; both null:
    organic), with a count per metric of klaviyo__count_metrics and a value sum per metric of
    klaviyo__sum_revenue_metrics.

    Incremental by person (macros/incremental.sql): a run recomputes the people whose klaviyo__events rows were
    written since its last build and the people credited to a campaign or flow whose name changed; people with no
    event left are deleted. Events without a person (none on Klaviyo) are one group, recomputed every run. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='person_id',
    on_schema_change='fail',
    pre_hook="{% if is_incremental() %}delete from {{ this }} where person_id is null{% endif %}",
    post_hook="{{ klaviyo.drop_vanished('person_id', ref('klaviyo__events')) }}",
) }}

with events as (
    select * from {{ ref('klaviyo__events') }}
    {%- if is_incremental() %}
    where person_id is null or person_id in (
        select person_id from {{ ref('klaviyo__events') }}
        where coalesce(_processed_through_load_id, '~') > {{ klaviyo.watermark() }}
        {%- for owner in ['campaign', 'flow'] %}
        union
        select t.person_id
        from {{ this }} as t
        left join {{ ref('stg_klaviyo__' ~ owner ~ 's') }} as o on o.{{ owner }}_id = t.{{ owner }}_id
        where t.{{ owner }}_id is not null and t.{{ owner }}_name is distinct from o.{{ owner }}_name
        {%- endfor %}
    )
    {%- endif %}
)

select
    {{ klaviyo.key(['e.person_id', 'e.campaign_id', 'e.flow_id', 'e.variation_id']) }} as person_campaign_flow_key,
    e.person_id,
    e.campaign_id,
    e.flow_id,
    e.variation_id,
    max(c.campaign_name) as campaign_name,
    max(f.flow_name) as flow_name,
    min(e.occurred_at) as first_event_at,
    max(e.occurred_at) as last_event_at,
    {%- for m in var('klaviyo__count_metrics') %}
    count(case when lower(e.metric_name) = {{ klaviyo.literal(m | lower) }} then 1 end) as count_{{ klaviyo.slug(m) }},
    {%- endfor %}
    {%- for m in var('klaviyo__sum_revenue_metrics') %}
    coalesce(sum(case when lower(e.metric_name) = {{ klaviyo.literal(m | lower) }} then e.numeric_value end), 0)
        as sum_revenue_{{ klaviyo.slug(m) }},
    {%- endfor %}
    count(*) as count_events,
    max(e._processed_through_load_id) as _processed_through_load_id
from events as e
left join {{ ref('stg_klaviyo__campaigns') }} as c on c.campaign_id = e.campaign_id
left join {{ ref('stg_klaviyo__flows') }} as f on f.flow_id = e.flow_id
group by e.person_id, e.campaign_id, e.flow_id, e.variation_id
