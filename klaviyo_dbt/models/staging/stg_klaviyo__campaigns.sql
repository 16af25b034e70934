{#- Campaigns with their channel (theirs, else their messages'). Deleted campaigns stay here (deleted_at), so events of
    their messages still resolve; the rollups leave them out. -#}
{%- set c = klaviyo.loaded('campaigns') -%}
with channels as (
    select campaign_id, min(channel) as channel, min(send_time) as first_message_send_time
    from {{ ref('stg_klaviyo__campaign_messages') }}
    group by campaign_id
)

select
    {{ klaviyo.col(c, 'id', 'text', 'c') }} as campaign_id,
    {{ klaviyo.col(c, 'name', 'text', 'c') }} as campaign_name,
    {{ klaviyo.col(c, 'status', 'text', 'c') }} as status,
    {{ klaviyo.col(c, 'archived', 'boolean', 'c') }} as archived,
    coalesce({{ klaviyo.channel(klaviyo.col(c, 'channel', 'text', 'c')) }}, ch.channel) as channel,
    {{ klaviyo.col(c, 'created_at', 'timestamp with time zone', 'c') }} as created_at,
    {{ klaviyo.col(c, 'scheduled_at', 'timestamp with time zone', 'c') }} as scheduled_at,
    coalesce({{ klaviyo.col(c, 'send_time', 'timestamp with time zone', 'c') }}, ch.first_message_send_time)
        as send_time,
    {{ klaviyo.col(c, 'updated_at', 'timestamp with time zone', 'c') }} as updated_at,
    {{ klaviyo.col(c, 'deleted_at', 'timestamp with time zone', 'c') }} as deleted_at
from {{ klaviyo.table_or_empty(c) }} as c
left join channels as ch on ch.campaign_id = {{ klaviyo.col(c, 'id', 'text', 'c') }}
