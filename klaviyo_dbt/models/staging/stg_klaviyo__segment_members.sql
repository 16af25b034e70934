{#- Segment memberships: who joined when (Klaviyo's joined_group_at is the latest join) and, once the loader
    marks removals (removed_at), who left when. -#}
{%- set m = klaviyo.loaded('segment_members') -%}
select
    {{ klaviyo.col(m, 'segment_id', 'text', 'm') }} as segment_id,
    {{ klaviyo.col(m, 'profile_id', 'text', 'm') }} as person_id,
    {{ klaviyo.col(m, 'joined_group_at', 'timestamp with time zone', 'm') }} as joined_at,
    {{ klaviyo.col(m, 'removed_at', 'timestamp with time zone', 'm') }} as removed_at
from {{ klaviyo.table_or_empty(m) }} as m
