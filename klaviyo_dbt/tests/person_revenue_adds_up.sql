-- A person's attributed revenue is their campaign revenue plus their flow revenue, and their lifetime
-- revenue is attributed plus organic.
select person_id
from {{ ref('klaviyo__persons') }}
where abs(attributed_revenue - campaign_revenue - flow_revenue) > 0.000001
    or abs(lifetime_revenue - attributed_revenue - organic_revenue) > 0.000001
