{#- After an incremental run of klaviyo__events: delete rows whose event is gone from the loaded table (or was
    soft-deleted, or belongs to a deleted profile). Recomputed people are replaced whole by delete+insert;
    this catches people with no event left, and events that vanished in a loader full refresh. -#}
{% macro drop_vanished_events() -%}
    {%- if is_incremental() -%}
    delete from {{ this }}
    where not exists (
        select 1 from {{ ref('stg_klaviyo__events') }} as live where live.event_id = {{ this }}.event_id
    )
    {%- endif -%}
{%- endmacro %}
