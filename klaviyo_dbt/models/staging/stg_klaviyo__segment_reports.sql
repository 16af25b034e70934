{#- Klaviyo's daily segment figures (segment_series_reports), no rows where they are not loaded. -#}
{%- set r = klaviyo.loaded('segment_series_reports') -%}
select
    {{ klaviyo.col(r, 'segment_id', 'text', 'r') }} as segment_id,
    cast({{ klaviyo.col(r, 'day', 'date', 'r') }} as date) as day,
    {%- for s in ['members_added', 'members_removed', 'net_members_changed', 'total_members'] %}
    cast({{ klaviyo.col(r, s, 'bigint', 'r') }} as bigint) as {{ s }}{{ "," if not loop.last }}
    {%- endfor %}
from {{ klaviyo.table_or_empty(r) }} as r
