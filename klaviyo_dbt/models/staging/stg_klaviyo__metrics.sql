{%- set m = klaviyo.loaded('metrics') -%}
{%- set integration = klaviyo.col(m, 'integration', klaviyo.json_type(), 'm') -%}
select
    {{ klaviyo.col(m, 'id', 'text', 'm') }} as metric_id,
    {{ klaviyo.col(m, 'name', 'text', 'm') }} as metric_name,
    {{ klaviyo.json_text(integration, ['name']) }} as integration_name,
    {{ klaviyo.json_text(integration, ['category']) }} as integration_category
from {{ klaviyo.table_or_empty(m) }} as m
where {{ klaviyo.is_live(m, 'm') }}
