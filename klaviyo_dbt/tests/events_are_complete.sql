-- klaviyo__events holds every live loaded event exactly once: none lost, none left over, none twice
-- (catches an incremental run that missed a late event, kept a deleted one or doubled a re-read).
with model as (
    select event_id, count(*) as copies from {{ ref('klaviyo__events') }} group by event_id
),

live as (
    select event_id from {{ ref('stg_klaviyo__events') }}
)

select coalesce(l.event_id, m.event_id) as event_id, m.copies
from live as l
full outer join model as m on m.event_id = l.event_id
where l.event_id is null or m.event_id is null or m.copies > 1
