{#- The loaded tables change shape as the loader grows: a table another issue adds (event_attributions, the
    report tables) may not exist yet, nor a column (deleted_at, removed_at, _dlt_load_id; and dlt creates a
    column only once a value arrives). These macros let the models read what is there and stand in typed
    nulls for what is not, instead of failing.

    `loaded(name)` looks a table up once per model: {relation: the table or none, columns: its column names};
    the other macros take what it returns. -#}

{#- The schema is listed from the catalog, not looked up with adapter.get_relation: dbt caches the models' schemas
    but not this one, and a thread that looks while another fills the cache with this schema's tables one by one
    finds it cached with tables missing (a race in dbt-adapters' list_relations), so a loaded table read as absent.
    Nor are a missing table's columns asked for: DuckDB's DESCRIBE fails on it and aborts the model's transaction. -#}
{% macro loaded(name) -%}
    {%- set declared = source('klaviyo', name) -%}
    {%- if not execute -%}{{ return({'relation': declared, 'columns': []}) }}{%- endif -%}
    {%- set listed = list_relations_without_caching(declared.without_identifier()) -%}
    {%- set here = [] -%}
    {%- for row in listed.rows if row['name'] | lower == declared.identifier | lower
                                  and row['schema'] | lower == declared.schema | lower -%}
        {%- do here.append(row) -%}
    {%- endfor -%}
    {%- if not here -%}{{ return({'relation': none, 'columns': []}) }}{%- endif -%}
    {%- set columns = adapter.get_columns_in_relation(declared) | map(attribute='name') | map('lower') | list -%}
    {{ return({'relation': declared, 'columns': columns}) }}
{%- endmacro %}

{% macro has_column(table, column) -%}
    {{ return(column | lower in table.columns) }}
{%- endmacro %}

{#- `alias.column`, or a typed null when the table or the column is not there. -#}
{% macro col(table, column, type, alias) -%}
    {%- if klaviyo.has_column(table, column) -%}{{ alias }}.{{ adapter.quote(column) }}
    {%- else -%}cast(null as {{ type }})
    {%- endif -%}
{%- endmacro %}

{#- A condition keeping rows that are not soft-deleted (issue14: deleted_at); true without the column. -#}
{% macro is_live(table, alias) -%}
    {%- if klaviyo.has_column(table, 'deleted_at') -%}{{ alias }}.deleted_at is null
    {%- else -%}1 = 1
    {%- endif -%}
{%- endmacro %}

{#- The table to select from: the loaded one, or an empty stand-in (its columns then come from `col`). -#}
{% macro table_or_empty(table) -%}
    {%- if table.relation is none -%}(select 1 as nothing where 1 = 0){%- else -%}{{ table.relation }}{%- endif -%}
{%- endmacro %}

{#- The IANA timezone days and months are counted in: var klaviyo__timezone, else the account's, else UTC. -#}
{% macro account_timezone() -%}
    {%- set tz = var('klaviyo__timezone', none) -%}
    {%- if tz is none and execute -%}
        {%- set accounts = klaviyo.loaded('accounts') -%}
        {%- if klaviyo.has_column(accounts, 'timezone') -%}
            {%- set found = run_query('select timezone from ' ~ accounts.relation
                                      ~ ' where timezone is not null order by id limit 1') -%}
            {%- if found is not none and found.rows | length > 0 -%}{%- set tz = found.rows[0][0] -%}{%- endif -%}
        {%- endif -%}
    {%- endif -%}
    {%- set tz = tz or 'UTC' -%}
    {%- if not modules.re.match('^[A-Za-z0-9_+/-]+$', tz) -%}
        {{ exceptions.raise_compiler_error("klaviyo__timezone must be an IANA timezone name, got " ~ tz) }}
    {%- endif -%}
    {{- return(tz) -}}
{%- endmacro %}
