{#- SQL that differs between DuckDB and PostgreSQL, one macro each (adapter.dispatch); the models call these
    and stay one copy for both. -#}

{#- A JSON column's value at `path` (a list of keys and array indexes) as text, null where absent. -#}
{% macro json_text(column, path) -%}
    {{ return(adapter.dispatch('json_text', 'klaviyo')(column, path)) }}
{%- endmacro %}

{% macro duckdb__json_text(column, path) -%}
    {%- set parts = [] -%}
    {%- for key in path -%}
        {%- if key is number -%}{%- do parts.append('[' ~ key ~ ']') -%}
        {%- else -%}{%- do parts.append('."' ~ (key | replace('"', '\\"') | replace("'", "''")) ~ '"') -%}
        {%- endif -%}
    {%- endfor -%}
    json_extract_string({{ column }}, '${{ parts | join("") }}')
{%- endmacro %}

{% macro default__json_text(column, path) -%}
    {%- set parts = [] -%}
    {%- for key in path -%}
        {%- if key is number -%}{%- do parts.append(key | string) -%}
        {%- else -%}{%- do parts.append('"' ~ (key | replace('"', '\\"') | replace("'", "''")) ~ '"') -%}
        {%- endif -%}
    {%- endfor -%}
    ({{ column }} #>> '{{ "{" ~ (parts | join(",")) ~ "}" }}')
{%- endmacro %}

{#- Text to a number (money: numeric(38, 6)); null for text that is not a number instead of an error. -#}
{% macro to_number(expression) -%}
    {{ return(adapter.dispatch('to_number', 'klaviyo')(expression)) }}
{%- endmacro %}

{% macro duckdb__to_number(expression) -%}
    try_cast({{ expression }} as numeric(38, 6))
{%- endmacro %}

{% macro default__to_number(expression) -%}
    case when {{ expression }} ~ '^\s*[-+]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][-+]?[0-9]{1,2})?\s*$'
         then cast({{ expression }} as numeric(38, 6)) end
{%- endmacro %}

{#- Text to boolean; null for anything but true/false. -#}
{% macro to_boolean(expression) -%}
    case lower({{ expression }}) when 'true' then true when 'false' then false end
{%- endmacro %}

{#- a / b as a fraction, 0 when b is 0 (Klaviyo's reports give 0.0 for a rate without a base). -#}
{% macro ratio(numerator, denominator) -%}
    case when ({{ denominator }}) > 0 then cast({{ numerator }} as double precision) / ({{ denominator }}) else 0 end
{%- endmacro %}

{#- An interval of n hours (n from a var: validated as a number). -#}
{% macro hours(n) -%}
    {%- if n is not number -%}
        {{ exceptions.raise_compiler_error("an attribution lookback must be a number of hours, got " ~ n) }}
    {%- endif -%}
    interval '{{ n }} hours'
{%- endmacro %}

{#- The calendar day of an instant in the account's timezone. -#}
{% macro local_date(timestamp) -%}
    cast(({{ timestamp }}) at time zone '{{ klaviyo.account_timezone() }}' as date)
{%- endmacro %}

{#- The first day of the month of a date. -#}
{% macro month_start(date) -%}
    cast(date_trunc('month', {{ date }}) as date)
{%- endmacro %}

{#- Whole months from month `a` to month `b` (dates). -#}
{% macro months_between(a, b) -%}
    cast((extract(year from {{ b }}) - extract(year from {{ a }})) * 12
         + extract(month from {{ b }}) - extract(month from {{ a }}) as integer)
{%- endmacro %}

{#- One row per step (an interval such as '1 day' or '1 month') from `lo` to `hi` (dates, inclusive) for each row
    of the relation before it: `from bounds {{ klaviyo.series('bounds.lo', 'bounds.hi', '1 day', 'spine') }}`
    gives spine.step_start (a timestamp). -#}
{% macro series(lo, hi, step, alias) -%}
    cross join lateral generate_series(cast({{ lo }} as timestamp), cast({{ hi }} as timestamp),
                                       interval '{{ step }}') as {{ alias }}(step_start)
{%- endmacro %}

{#- A text literal. -#}
{% macro literal(value) -%}
    '{{ value | string | replace("'", "''") }}'
{%- endmacro %}

{#- `lower(expr) in ('a', 'b')` for a list of names from a var; false for an empty list. -#}
{% macro in_names(expression, names) -%}
    {%- if names | length == 0 -%}false{%- else -%}
    lower({{ expression }}) in ({% for n in names %}{{ klaviyo.literal(n | lower) }}{{ ", " if not loop.last }}{% endfor %})
    {%- endif -%}
{%- endmacro %}

{#- A column name from a metric name: `Placed Order` -> `placed_order`. -#}
{% macro slug(name) -%}
    {{- return(modules.re.sub('[^a-z0-9]+', '_', name | lower).strip('_')) -}}
{%- endmacro %}

{#- The type dlt loads JSON columns as. -#}
{% macro json_type() -%}
    {{ return(adapter.dispatch('json_type', 'klaviyo')()) }}
{%- endmacro %}

{% macro duckdb__json_type() -%}json{%- endmacro %}

{% macro default__json_type() -%}jsonb{%- endmacro %}

{#- A message channel as email, sms or push (campaign definitions say mobile_push). -#}
{% macro channel(expression) -%}
    case lower({{ expression }}) when 'email' then 'email' when 'sms' then 'sms'
        when 'mobile_push' then 'push' when 'push' then 'push' when 'push-notification' then 'push' end
{%- endmacro %}

{#- A stable key from several columns (nulls as empty text). -#}
{% macro key(columns) -%}
    md5({% for c in columns %}coalesce(cast({{ c }} as text), ''){{ " || '|' || " if not loop.last }}{% endfor %})
{%- endmacro %}
