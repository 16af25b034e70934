-- An event credited to a message (its own, Klaviyo's attribution or a session touch) names the campaign or
-- the flow, never both; an organic one names neither.
select event_id, attribution_source, campaign_id, flow_id
from {{ ref('klaviyo__events') }}
where (attribution_source is not null and (campaign_id is null) = (flow_id is null))
    or (attribution_source is null and coalesce(campaign_id, flow_id, message_id) is not null)
