{#- Klaviyo's own message figures as loaded (issue11's report tables), one row per report row: the campaign
    values reports (a campaign message over a timeframe), the flow values reports (a flow message over a
    timeframe) and the daily flow series reports. Sends from first_day up to (not including) end_day, in the
    account's timezone, counted as Klaviyo had them when the row was read (read_at: its load). No rows where
    no report table is loaded. -#}
{%- set statistics = klaviyo.message_statistic_kinds() -%}
{%- set reports = [
    ('campaign_values_reports', 'campaign', 'campaign_message_id', 'timeframe_start', 'timeframe_end'),
    ('flow_values_reports', 'flow', 'flow_message_id', 'timeframe_start', 'timeframe_end'),
    ('flow_series_reports', 'flow', 'flow_message_id', 'day', none)] -%}
{%- for table, owner, message, first, last in reports %}
{%- set r = klaviyo.loaded(table) %}
select
    '{{ table }}' as report,
    {{ klaviyo.col(r, 'campaign_id', 'text', 'r') if owner == 'campaign' else 'cast(null as text)' }} as campaign_id,
    {{ klaviyo.col(r, 'flow_id', 'text', 'r') if owner == 'flow' else 'cast(null as text)' }} as flow_id,
    {{ klaviyo.col(r, message, 'text', 'r') }} as message_id,
    {{ klaviyo.col(r, 'send_channel', 'text', 'r') }} as send_channel,
    {{ klaviyo.col(r, 'conversion_metric_id', 'text', 'r') }} as conversion_metric_id,
    cast({{ klaviyo.col(r, first, 'date', 'r') }} as date) as first_day,
    {%- if last %}
    cast({{ klaviyo.col(r, last, 'date', 'r') }} as date) as end_day,
    {%- else %}
    cast({{ klaviyo.col(r, first, 'date', 'r') }} as date) + 1 as end_day,
    {%- endif %}
    {{ klaviyo.col(r, '_dlt_load_id', 'text', 'r') }} as load_id,
    -- when it was read: its load's id is the load's start in epoch seconds
    to_timestamp(cast({{ klaviyo.col(r, '_dlt_load_id', 'text', 'r') }} as double precision)) as read_at,
    {%- for s in statistics %}
    cast({{ klaviyo.col(r, s, 'double precision', 'r') }} as double precision) as {{ s }}{{ "," if not loop.last }}
    {%- endfor %}
from {{ klaviyo.table_or_empty(r) }} as r
{{ "union all" if not loop.last }}
{%- endfor %}
