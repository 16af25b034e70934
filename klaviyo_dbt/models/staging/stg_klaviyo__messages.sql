{#- Every message events can be about: campaign messages (sent at their campaign's send time) and flow messages
    (sent person by person), with the campaign or flow they belong to. -#}
select
    m.message_id, 'campaign' as message_type, m.campaign_id, cast(null as text) as flow_id, m.channel,
    coalesce(m.message_name, c.campaign_name) as message_name, m.subject,
    coalesce(m.send_time, c.send_time) as send_time, m.deleted_at
from {{ ref('stg_klaviyo__campaign_messages') }} as m
left join {{ ref('stg_klaviyo__campaigns') }} as c on c.campaign_id = m.campaign_id
union all
select
    message_id, 'flow' as message_type, cast(null as text) as campaign_id, flow_id, channel, message_name,
    subject, cast(null as timestamp with time zone) as send_time, deleted_at
from {{ ref('stg_klaviyo__flow_messages') }}
