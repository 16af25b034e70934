{#- Each person's events of each message, variation and send day (account timezone), per metric and load, split into
    the message's own events and the events credited to it: what klaviyo__message_performance counts, kept per person so
    that it can recount just the days whose events changed.

    Incremental by person like klaviyo__person_campaign_flow (events without a person are the person_key '',
    recomputed every run). A recomputed person's rows that are gone (a conversion credited elsewhere now, a flow
    message's open now on another send day, an event deleted) are written again with events = 0 and the new stamp,
    so klaviyo__message_performance sees which days lost them; such rows are dropped the next time the person is
    recomputed. A recomputed person's row that came out as it was keeps when it last changed
    (_changed_through_load_id). -#}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='person_key',
    on_schema_change='fail',
) }}

{%- set grain = ['person_key', 'message_id', 'variation_id', 'day', 'metric_id', 'is_own', 'load_id'] %}

with
{%- if is_incremental() %}
changed as (
    select coalesce(person_id, '') as person_key from {{ ref('klaviyo__events') }}
    where coalesce(_processed_through_load_id, '~') > {{ klaviyo.watermark() }}
    union
    select '' as person_key
    union
    select t.person_key from {{ this }} as t
    where t.events > 0 and not exists (
        select 1 from {{ ref('klaviyo__events') }} as e where coalesce(e.person_id, '') = t.person_key
    )
),
{%- endif %}

fresh as (
    select
        coalesce(person_id, '') as person_key,
        max(person_id) as person_id,
        message_id,
        variation_id,
        {{ klaviyo.local_date('coalesce(send_at, occurred_at)') }} as day,
        metric_id,
        attribution_source = 'message' as is_own,
        _dlt_load_id as load_id,
        max(metric_name) as metric_name,
        max(campaign_id) as campaign_id,
        max(flow_id) as flow_id,
        max(channel) as channel,
        count(*) as events,
        sum(numeric_value) as numeric_value
    from {{ ref('klaviyo__events') }}
    where message_id is not null
    {%- if is_incremental() %}
        and coalesce(person_id, '') in (select person_key from changed)
    {%- endif %}
    group by coalesce(person_id, ''), message_id, variation_id,
        {{ klaviyo.local_date('coalesce(send_at, occurred_at)') }}, metric_id, attribution_source = 'message',
        _dlt_load_id
)

{%- if is_incremental() %}

select
    f.*,
    -- a row as it was keeps when it last changed: klaviyo__message_performance then recounts only the days that did
    coalesce(t._changed_through_load_id, {{ klaviyo.latest_stamp() }}) as _changed_through_load_id,
    {{ klaviyo.latest_stamp() }} as _processed_through_load_id
from fresh as f
left join {{ this }} as t
    on {% for c in grain + ['events', 'numeric_value', 'metric_name', 'campaign_id', 'flow_id', 'channel'] -%}
    coalesce(cast(t.{{ c }} as text), '') = coalesce(cast(f.{{ c }} as text), '')
    {{- "\n    and " if not loop.last }}{% endfor %}
union all
select
    {%- for c in grain[:1] %} t.{{ c }},{% endfor %} t.person_id,
    {%- for c in grain[1:] %} t.{{ c }},{% endfor %}
    t.metric_name, t.campaign_id, t.flow_id, t.channel, 0 as events, cast(null as numeric(38, 6)) as numeric_value,
    {{ klaviyo.latest_stamp() }} as _changed_through_load_id,
    {{ klaviyo.latest_stamp() }} as _processed_through_load_id
from {{ this }} as t
where t.events > 0
    and t.person_key in (select person_key from changed)
    and not exists (
        select 1 from fresh as f
        where {% for c in grain %}coalesce(cast(f.{{ c }} as text), '') = coalesce(cast(t.{{ c }} as text), '')
            {{- " and " if not loop.last }}{% endfor %}
    )
{%- else %}

select f.*, {{ klaviyo.latest_stamp() }} as _changed_through_load_id,
    {{ klaviyo.latest_stamp() }} as _processed_through_load_id
from fresh as f
{%- endif %}
