{#- Our tallies of each report row of Klaviyo's (stg_klaviyo__message_reports), counted on Klaviyo's basis: the
    sends of the row's timeframe (account timezone; a campaign by its send time, a flow message by each person's
    receipt), their events and the credited conversions of the row's conversion metric, as far as they had happened
    when the row was read (read_at); and how many of those events loaded after it (late_events).
    klaviyo__reconciliation sets Klaviyo's statistics beside ours from these.

    Incremental: a run recounts the report rows loaded (or re-read) since and those whose message has a send day in
    their timeframe that int_klaviyo__message_person_days stamped since (events new, changed or gone); rows of
    report rows no longer loaded are deleted. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='report_key',
    on_schema_change='fail',
    post_hook="{% if is_incremental() %}delete from {{ this }} where report_key not in (
        select {{ klaviyo.report_key('r') }} from {{ ref('stg_klaviyo__message_reports') }} as r)
        {% endif %}",
) }}

with reports as (
    select
        r.*,
        {{ klaviyo.report_key('r') }} as report_key,
        coalesce(r.read_at, cast('9999-12-31' as timestamp with time zone)) as cutoff
    from {{ ref('stg_klaviyo__message_reports') }} as r
),

{%- if is_incremental() %}

touched as (
    select distinct message_id, day
    from {{ ref('int_klaviyo__message_person_days') }}
    where coalesce(_changed_through_load_id, '~') > {{ klaviyo.watermark() }}
),

scope as (
    select r.* from reports as r
    where not exists (
        select 1 from {{ this }} as t
        where t.report_key = r.report_key and coalesce(t.report_load_id, '') = coalesce(r.load_id, '')
    )
        or exists (
            select 1 from touched as t
            where t.message_id = r.message_id and t.day >= r.first_day and t.day < r.end_day
        )
),
{%- else %}

scope as (
    select * from reports
),
{%- endif %}

facts as (
    select
        message_id, person_id, metric_id, metric_name, attribution_source, numeric_value, occurred_at, _dlt_load_id,
        {{ klaviyo.local_date('coalesce(send_at, occurred_at)') }} as send_day
    from {{ ref('klaviyo__events') }}
    where message_id in (select message_id from scope)
),

-- the facts of each report row; a one-day row (the daily series) joins on its day, so that a message's facts are not
-- joined to each of its days before being filtered
matched as (
    {%- for one_day in [true, false] %}
    select r.report_key, r.conversion_metric_id, r.load_id as report_load_id, f.*
    from scope as r
    join facts as f
        on f.message_id = r.message_id
        {%- if one_day %}
        and f.send_day = r.first_day
        {%- else %}
        and f.send_day >= r.first_day and f.send_day < r.end_day
        {%- endif %}
        and f.occurred_at < r.cutoff
    where {{ "" if one_day else "not " }}(r.end_day = r.first_day + 1)
    {{ "union all" if one_day }}
    {%- endfor %}
),

own as (
    select report_key, {{ klaviyo.message_tallies() }}
    from matched
    where attribution_source = 'message'
    group by report_key
),

conversions as (
    select
        report_key,
        {{ klaviyo.conversion_tallies() }}
    from matched
    where attribution_source in ('native', 'session') and metric_id = conversion_metric_id
    group by report_key
),

late as (
    select report_key, count(*) as late_events
    from matched
    where _dlt_load_id > report_load_id
    group by report_key
)

select
    r.report_key,
    r.load_id as report_load_id,
    {{- klaviyo.tallies_or_zero('o', 'c') }},
    coalesce(l.late_events, 0) as late_events,
    {{ klaviyo.latest_stamp('int_klaviyo__message_person_days') }} as _processed_through_load_id
from scope as r
left join own as o on o.report_key = r.report_key
left join conversions as c on c.report_key = r.report_key
left join late as l on l.report_key = r.report_key
