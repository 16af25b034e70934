{#- Which rows a column test of a model checks (dbt's `where` config; this overrides dbt's own get_where_subquery
    for one value of it). `where: latest_build`, set for the marts' column tests in dbt_project.yml: on a model with
    the incremental stamp _processed_through_load_id, only the rows of the latest stamp, i.e. every row after a full
    build and the rows an incremental build wrote (or those of the build before, when it wrote none); other models
    whole. Rows an incremental build left alone were tested when they were written; the singular tests in tests/
    (no event lost or doubled, revenue adds up, ...) still check whole tables on every build. -#}
{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where', '') -%}
    {%- if where == 'latest_build' -%}
        {%- set columns = adapter.get_columns_in_relation(relation) | map(attribute='name') | map('lower') | list -%}
        {%- set where = '_processed_through_load_id = (select max(_processed_through_load_id) from ' ~ relation ~ ')'
            if '_processed_through_load_id' in columns else '' -%}
    {%- endif -%}
    {%- if where -%}
        {%- do return('(select * from ' ~ relation ~ ' where ' ~ where ~ ') as dbt_subquery') -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}
