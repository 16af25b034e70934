-- Every message statistic we count is within the stated tolerance of Klaviyo's own report
-- (var klaviyo__reconciliation_tolerance; klaviyo__reconciliation.gap_reason says why figures differ), for the
-- report rows read with the latest events (older rows predate what loaded since: shown, not held to it).
select report, message_id, first_day, statistic, klaviyo_value, our_value, tolerance, gap_reason
from {{ ref('klaviyo__reconciliation') }}
where not within_tolerance and not read_before_latest_load
