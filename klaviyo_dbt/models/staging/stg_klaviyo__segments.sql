{%- set g = klaviyo.loaded('segments') -%}
select
    {{ klaviyo.col(g, 'id', 'text', 'g') }} as segment_id,
    {{ klaviyo.col(g, 'name', 'text', 'g') }} as segment_name,
    {{ klaviyo.col(g, 'created', 'timestamp with time zone', 'g') }} as created_at,
    {{ klaviyo.col(g, 'updated', 'timestamp with time zone', 'g') }} as updated_at,
    {{ klaviyo.col(g, 'deleted_at', 'timestamp with time zone', 'g') }} as deleted_at
from {{ klaviyo.table_or_empty(g) }} as g
