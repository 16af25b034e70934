{#- Klaviyo's own attribution of an event (event_attributions), one per event: should Klaviyo ever send
    several, the one with the smallest id is kept so that revenue is never counted twice. -#}
{%- set a = klaviyo.loaded('event_attributions') -%}

select
    attribution_id, event_id, attributed_event_id, campaign_id, campaign_message_id, flow_id, flow_message_id,
    flow_message_variation_id, load_id
from (
    select
        {{ klaviyo.col(a, 'id', 'text', 'a') }} as attribution_id,
        {{ klaviyo.col(a, 'event_id', 'text', 'a') }} as event_id,
        {{ klaviyo.col(a, 'attributed_event_id', 'text', 'a') }} as attributed_event_id,
        {{ klaviyo.col(a, 'campaign_id', 'text', 'a') }} as campaign_id,
        {{ klaviyo.col(a, 'campaign_message_id', 'text', 'a') }} as campaign_message_id,
        {{ klaviyo.col(a, 'flow_id', 'text', 'a') }} as flow_id,
        {{ klaviyo.col(a, 'flow_message_id', 'text', 'a') }} as flow_message_id,
        {{ klaviyo.col(a, 'flow_message_variation_id', 'text', 'a') }} as flow_message_variation_id,
        {{ klaviyo.col(a, '_dlt_load_id', 'text', 'a') }} as load_id,
        row_number() over (
            partition by {{ klaviyo.col(a, 'event_id', 'text', 'a') }} order by {{ klaviyo.col(a, 'id', 'text', 'a') }}
        ) as nth
    from {{ klaviyo.table_or_empty(a) }} as a
    where {{ klaviyo.is_live(a, 'a') }}
) as numbered
where nth = 1 and event_id is not null
