{#- Incremental models recompute what changed since their last build and delete what is gone. klaviyo__events
    stamps every row it writes with the latest completed load (_processed_through_load_id); a model built from it
    keeps the stamp of what it took in, its watermark, and recomputes the people whose rows are stamped later. -#}

{#- The latest stamp this model has taken in ('' before its first build; '~' sorts after every load id, so rows
    without one are always newer). -#}
{% macro watermark() -%}
    (select coalesce(max(_processed_through_load_id), '') from {{ this }})
{%- endmacro %}

{#- The latest completed dlt load (_dlt_loads), null where the table is not there. -#}
{% macro latest_completed_load() -%}
    {%- set loads = klaviyo.loaded('_dlt_loads') -%}
    {%- if loads.relation is not none -%}(select max(load_id) from {{ loads.relation }} where status = 0)
    {%- else -%}cast(null as text)
    {%- endif -%}
{%- endmacro %}

{#- After an incremental run: delete the rows whose `key` has no row left in `relation` (`where`: which of its rows
    count). Replacing changed keys by delete+insert leaves keys that vanished altogether: events gone from the loaded
    table (soft-deleted, of deleted profiles, or absent after a loader full refresh), people with no event left. -#}
{% macro drop_vanished(key, relation, where='1 = 1') -%}
    {%- if is_incremental() -%}
    delete from {{ this }}
    where not exists (
        select 1 from {{ relation }} as live where live.{{ key }} = {{ this }}.{{ key }} and {{ where }}
    )
    {%- endif -%}
{%- endmacro %}

{#- The latest stamp of `model` (default klaviyo__events): what a model built from it has taken in, written to its
    rows. -#}
{% macro latest_stamp(model='klaviyo__events') -%}
    (select max(_processed_through_load_id) from {{ ref(model) }})
{%- endmacro %}
