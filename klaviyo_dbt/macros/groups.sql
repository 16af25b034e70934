{#- Lists and segments are the same shape in Klaviyo (a group of profiles, its members with the time they joined),
    so one macro stages each of the pair: `kind` is list or segment. -#}

{#- The lists or segments: id, name, when created and updated, soft deletion. -#}
{% macro stage_groups(kind) -%}
{%- set g = klaviyo.loaded(kind ~ 's') -%}
select
    {{ klaviyo.col(g, 'id', 'text', 'g') }} as {{ kind }}_id,
    {{ klaviyo.col(g, 'name', 'text', 'g') }} as {{ kind }}_name,
    {{ klaviyo.col(g, 'created', 'timestamp with time zone', 'g') }} as created_at,
    {{ klaviyo.col(g, 'updated', 'timestamp with time zone', 'g') }} as updated_at,
    {{ klaviyo.col(g, 'deleted_at', 'timestamp with time zone', 'g') }} as deleted_at
from {{ klaviyo.table_or_empty(g) }} as g
{%- endmacro %}

{#- Their memberships: who joined when (Klaviyo's joined_group_at is the latest join) and, once the loader marks
    removals (removed_at), who left when. -#}
{% macro stage_members(kind) -%}
{%- set m = klaviyo.loaded(kind ~ '_members') -%}
select
    {{ klaviyo.col(m, kind ~ '_id', 'text', 'm') }} as {{ kind }}_id,
    {{ klaviyo.col(m, 'profile_id', 'text', 'm') }} as person_id,
    {{ klaviyo.col(m, 'joined_group_at', 'timestamp with time zone', 'm') }} as joined_at,
    {{ klaviyo.col(m, 'removed_at', 'timestamp with time zone', 'm') }} as removed_at
from {{ klaviyo.table_or_empty(m) }} as m
{%- endmacro %}
