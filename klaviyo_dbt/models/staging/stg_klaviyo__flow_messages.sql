{#- Flow messages with the flow they belong to (through their action). -#}
{%- set m = klaviyo.loaded('flow_messages') -%}
{%- set a = klaviyo.loaded('flow_actions') -%}
{%- set definition = klaviyo.col(m, 'definition', klaviyo.json_type(), 'm') -%}
select
    {{ klaviyo.col(m, 'id', 'text', 'm') }} as message_id,
    a.flow_id,
    {{ klaviyo.col(m, 'flow_action_id', 'text', 'm') }} as flow_action_id,
    {{ klaviyo.channel(klaviyo.col(m, 'channel', 'text', 'm')) }} as channel,
    {{ klaviyo.json_text(definition, ['name']) }} as message_name,
    {{ klaviyo.json_text(definition, ['subject_line']) }} as subject,
    {{ klaviyo.col(m, 'created', 'timestamp with time zone', 'm') }} as created_at,
    {{ klaviyo.col(m, 'updated', 'timestamp with time zone', 'm') }} as updated_at,
    {{ klaviyo.col(m, 'deleted_at', 'timestamp with time zone', 'm') }} as deleted_at
from {{ klaviyo.table_or_empty(m) }} as m
left join (
    select {{ klaviyo.col(a, 'id', 'text', 'a') }} as action_id, {{ klaviyo.col(a, 'flow_id', 'text', 'a') }} as flow_id
    from {{ klaviyo.table_or_empty(a) }} as a
) as a on a.action_id = {{ klaviyo.col(m, 'flow_action_id', 'text', 'm') }}
