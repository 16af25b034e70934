{#- Campaign messages (one per message of a campaign; A/B variations are messages of their own). -#}
{%- set m = klaviyo.loaded('campaign_messages') -%}
{%- set definition = klaviyo.col(m, 'definition', klaviyo.json_type(), 'm') -%}
select
    {{ klaviyo.col(m, 'id', 'text', 'm') }} as message_id,
    {{ klaviyo.col(m, 'campaign_id', 'text', 'm') }} as campaign_id,
    {{ klaviyo.channel(klaviyo.json_text(definition, ['channel'])) }} as channel,
    {{ klaviyo.json_text(definition, ['label']) }} as message_name,
    {{ klaviyo.json_text(definition, ['content', 'subject']) }} as subject,
    cast({{ klaviyo.json_text(klaviyo.col(m, 'send_times', klaviyo.json_type(), 'm'), [0, 'datetime']) }}
         as timestamp with time zone) as send_time,
    {{ klaviyo.col(m, 'created_at', 'timestamp with time zone', 'm') }} as created_at,
    {{ klaviyo.col(m, 'updated_at', 'timestamp with time zone', 'm') }} as updated_at,
    {{ klaviyo.col(m, 'deleted_at', 'timestamp with time zone', 'm') }} as deleted_at
from {{ klaviyo.table_or_empty(m) }} as m
