-- An event credited to a message (its own, Klaviyo's attribution or a session touch) names that message or
-- its campaign or flow, never a campaign and a flow at once; an organic event names none.
select event_id, attribution_source, message_id, campaign_id, flow_id
from {{ ref('klaviyo__events') }}
where (campaign_id is not null and flow_id is not null)
    or (attribution_source is not null and coalesce(message_id, campaign_id, flow_id) is null)
    or (attribution_source is null and coalesce(message_id, campaign_id, flow_id, variation_id) is not null)
