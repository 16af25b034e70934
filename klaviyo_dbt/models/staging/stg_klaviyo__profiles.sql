{#- Profiles with consent per channel read from `subscriptions`. Deleted profiles stay here (deleted_at);
    klaviyo__persons leaves them out. -#}
{%- set p = klaviyo.loaded('profiles') -%}
{%- set subs = klaviyo.col(p, 'subscriptions', klaviyo.json_type(), 'p') -%}
select
    {{ klaviyo.col(p, 'id', 'text', 'p') }} as person_id,
    {%- for name in ['email', 'phone_number', 'external_id', 'first_name', 'last_name', 'organization', 'title',
                     'locale'] %}
    {{ klaviyo.col(p, name, 'text', 'p') }} as {{ name }},
    {%- endfor %}
    {%- for name in ['city', 'region', 'country', 'zip', 'timezone'] %}
    {{ klaviyo.col(p, 'location__' ~ name, 'text', 'p') }} as {{ name }},
    {%- endfor %}
    {{ klaviyo.col(p, 'created', 'timestamp with time zone', 'p') }} as created_at,
    {{ klaviyo.col(p, 'updated', 'timestamp with time zone', 'p') }} as updated_at,
    {{ klaviyo.col(p, 'last_event_date', 'timestamp with time zone', 'p') }} as last_event_date,
    {{ klaviyo.json_text(subs, ['email', 'marketing', 'consent']) }} as email_marketing_consent,
    {{ klaviyo.to_boolean(klaviyo.json_text(subs, ['email', 'marketing', 'can_receive_email_marketing'])) }}
        as can_receive_email_marketing,
    cast({{ klaviyo.json_text(subs, ['email', 'marketing', 'consent_timestamp']) }} as timestamp with time zone)
        as email_marketing_consent_at,
    {{ klaviyo.json_text(subs, ['email', 'marketing', 'suppression', 0, 'reason']) }} as email_suppression_reason,
    {{ klaviyo.json_text(subs, ['sms', 'marketing', 'consent']) }} as sms_marketing_consent,
    {{ klaviyo.to_boolean(klaviyo.json_text(subs, ['sms', 'marketing', 'can_receive_sms_marketing'])) }}
        as can_receive_sms_marketing,
    cast({{ klaviyo.json_text(subs, ['sms', 'marketing', 'consent_timestamp']) }} as timestamp with time zone)
        as sms_marketing_consent_at,
    {{ klaviyo.json_text(subs, ['mobile_push', 'marketing', 'consent']) }} as push_marketing_consent,
    {{ klaviyo.to_boolean(klaviyo.json_text(subs, ['mobile_push', 'marketing', 'can_receive_push_marketing'])) }}
        as can_receive_push_marketing,
    {{ klaviyo.col(p, 'properties', klaviyo.json_type(), 'p') }} as properties,
    {{ klaviyo.col(p, 'deleted_at', 'timestamp with time zone', 'p') }} as deleted_at,
    {{ klaviyo.col(p, '_dlt_load_id', 'text', 'p') }} as load_id
from {{ klaviyo.table_or_empty(p) }} as p
