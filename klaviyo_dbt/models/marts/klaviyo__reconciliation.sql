{#- Our message statistics against Klaviyo's own (the loaded campaign values, flow values and flow series
    reports): one row per report row and statistic, with the difference, whether it is within the stated
    tolerance (var klaviyo__reconciliation_tolerance) and, where the figures differ, the likely reason. A report
    row read before the latest events load is compared but not held to the tolerance: what loaded since (late
    events, attributions that moved) is in our figures and not in its.

    Counted on Klaviyo's basis: sends in the report's timeframe (account timezone; a campaign by its send time, a
    flow message by each person's receipt), their events and credited conversions of the report's conversion
    metric, as far as they had happened when the report was read (read_at). -#}
{%- set kinds = klaviyo.message_statistic_kinds() -%}
{%- set e = klaviyo.loaded('events') -%}
{%- set p = klaviyo.loaded('profiles') -%}
{%- set tolerance = var('klaviyo__reconciliation_tolerance') -%}
with reports as (
    select r.*, {{ klaviyo.report_key('r') }} as report_key
    from {{ ref('stg_klaviyo__message_reports') }} as r
),

tallied as (
    select * from {{ ref('int_klaviyo__report_tallies') }}
),

ours as (
    select t.report_key, {{ klaviyo.message_statistics('t') }}
    from tallied as t
),

-- one row per report row and statistic Klaviyo gave (the pairs in one pass: a query per statistic would count
-- our figures once for each)
compared as (
    select * from (
        select
            r.report_key,
            s.statistic,
            s.statistic_kind,
            case s.statistic
                {%- for statistic in kinds %}
                when '{{ statistic }}' then r.{{ statistic }}
                {%- endfor %}
            end as klaviyo_value,
            case s.statistic
                {%- for statistic in kinds %}
                when '{{ statistic }}' then cast(o.{{ statistic }} as double precision)
                {%- endfor %}
            end as our_value
        from reports as r
        join ours as o on o.report_key = r.report_key
        cross join (
            values
            {%- for statistic, kind in kinds.items() %}
                ('{{ statistic }}', '{{ kind }}'){{ "," if not loop.last }}
            {%- endfor %}
        ) as s (statistic, statistic_kind)
    ) as pairs
    where klaviyo_value is not null
),

judged as (
    select
        c.*,
        c.our_value - c.klaviyo_value as difference,
        case c.statistic_kind
            {%- for kind in ['count', 'value', 'rate'] %}
            when '{{ kind }}' then greatest({{ tolerance[kind]['absolute'] }},
                                            {{ tolerance[kind]['relative'] }} * abs(c.klaviyo_value))
            {%- endfor %}
        end as tolerance,
        -- Klaviyo rounds money to cents and rates to 6 decimals
        abs(c.our_value - c.klaviyo_value) <= case c.statistic_kind when 'count' then 0
                                                  when 'value' then 0.005 else 0.0000005 end as matches
    from compared as c
),

context as (
    select
        not exists (select 1 from {{ ref('stg_klaviyo__event_attributions') }}) as session_attribution,
        (select {{ klaviyo.local_date('min(occurred_at)') }} from {{ ref('klaviyo__events') }}) as first_loaded_day,
        -- the latest load that changed the events: new or re-read ones, and deletions (soft-deleted events,
        -- deleted profiles), which leave our figures and not a report row read before them
        greatest(
            coalesce((select max(_dlt_load_id) from {{ ref('klaviyo__events') }}), '')
            {%- if klaviyo.has_column(e, '_dlt_load_id') %},
            coalesce((select max(e._dlt_load_id) from {{ e.relation }} as e), '')
            {%- endif %}
            {%- if klaviyo.has_column(p, 'deleted_at') and klaviyo.has_column(p, '_dlt_load_id') %},
            coalesce((select max(p._dlt_load_id) from {{ p.relation }} as p where p.deleted_at is not null), '')
            {%- endif %}
        ) as latest_events_load
)

select
    {{ klaviyo.key(['j.report_key', 'j.statistic']) }} as reconciliation_key,
    r.report,
    r.campaign_id,
    r.flow_id,
    r.message_id,
    r.send_channel,
    r.conversion_metric_id,
    r.first_day,
    r.end_day,
    r.read_at,
    j.statistic,
    j.statistic_kind,
    j.klaviyo_value,
    j.our_value,
    j.difference,
    j.tolerance,
    abs(j.difference) <= j.tolerance as within_tolerance,
    j.matches,
    coalesce(r.load_id < x.latest_events_load, false) as read_before_latest_load,
    coalesce(l.late_events, 0) as late_events,
    case
        when j.matches then null
        when r.load_id < x.latest_events_load
            then 'Klaviyo''s figure was read before later loads (late events, changed attributions); the loader '
                 || 're-reads only recent reports'
        when x.session_attribution and j.statistic in (
                'conversions', 'conversion_uniques', 'conversion_value', 'conversion_rate', 'average_order_value',
                'revenue_per_recipient')
            then 'conversions credited here by last touch, by Klaviyo natively (event_attributions not loaded)'
        when j.difference < 0 and r.first_day < x.first_loaded_day
            then 'the timeframe starts before the first loaded event (start_date)'
        when j.difference < 0
            then 'Klaviyo counts events not loaded here (deleted profiles, events outside the loaded windows)'
        else 'events here that Klaviyo leaves out (e.g. bot clicks or machine opens it filters)'
    end as gap_reason
from judged as j
join reports as r on r.report_key = j.report_key
join tallied as l on l.report_key = j.report_key
cross join context as x
