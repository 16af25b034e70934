{#- Events as columns: the message a message event is about (from its properties), its value, its load
    marker. Soft-deleted events and the events of deleted profiles are left out. -#}
{%- set e = klaviyo.loaded('events') -%}
{%- set p = klaviyo.loaded('profiles') -%}

select
    {{ klaviyo.col(e, 'id', 'text', 'e') }} as event_id,
    {{ klaviyo.col(e, 'uuid', 'text', 'e') }} as event_uuid,
    {{ klaviyo.col(e, 'datetime', 'timestamp with time zone', 'e') }} as occurred_at,
    {{ klaviyo.col(e, 'profile_id', 'text', 'e') }} as person_id,
    {{ klaviyo.col(e, 'metric_id', 'text', 'e') }} as metric_id,
    {%- set properties = klaviyo.col(e, 'event_properties', klaviyo.json_type(), 'e') %}
    {{ klaviyo.to_number(klaviyo.json_text(properties, ['$value'])) }} as numeric_value,
    {{ klaviyo.json_text(properties, ['$message']) }} as property_message_id,
    {{ klaviyo.json_text(properties, ['$flow']) }} as property_flow_id,
    {{ klaviyo.json_text(properties, ['$variation']) }} as property_variation_id,
    coalesce({{ klaviyo.col(e, 'profile_id', 'text', 'e') }}, '#' || {{ klaviyo.col(e, 'id', 'text', 'e') }}) as person_partition,
    {{ klaviyo.col(e, '_dlt_load_id', 'text', 'e') }} as load_id
from {{ klaviyo.table_or_empty(e) }} as e
where {{ klaviyo.is_live(e, 'e') }}
{%- if klaviyo.has_column(p, 'deleted_at') %}
    and not exists (select 1 from {{ p.relation }} as p where p.id = e.profile_id and p.deleted_at is not null)
{%- endif %}
