{%- set f = klaviyo.loaded('flows') -%}
select
    {{ klaviyo.col(f, 'id', 'text', 'f') }} as flow_id,
    {{ klaviyo.col(f, 'name', 'text', 'f') }} as flow_name,
    {{ klaviyo.col(f, 'status', 'text', 'f') }} as status,
    {{ klaviyo.col(f, 'archived', 'boolean', 'f') }} as archived,
    {{ klaviyo.col(f, 'trigger_type', 'text', 'f') }} as trigger_type,
    {{ klaviyo.col(f, 'created', 'timestamp with time zone', 'f') }} as created_at,
    {{ klaviyo.col(f, 'updated', 'timestamp with time zone', 'f') }} as updated_at,
    {{ klaviyo.col(f, 'deleted_at', 'timestamp with time zone', 'f') }} as deleted_at
from {{ klaviyo.table_or_empty(f) }} as f
