{#- One row per person and what their events are credited to (campaign or flow, and variation; both null:
    organic), with a count per metric of klaviyo__count_metrics and a value sum per metric of
    klaviyo__sum_revenue_metrics. -#}
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
    count(*) as count_events
from {{ ref('klaviyo__events') }} as e
left join {{ ref('stg_klaviyo__campaigns') }} as c on c.campaign_id = e.campaign_id
left join {{ ref('stg_klaviyo__flows') }} as f on f.flow_id = e.flow_id
group by e.person_id, e.campaign_id, e.flow_id, e.variation_id
