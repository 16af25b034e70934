{#- Every event with its metric, person and the campaign / flow / message / variation it is credited to.

    attribution_source:
      message  the event is itself about a message (received, opened, clicked, ...): its own message
      native   Klaviyo attributed it (event_attributions)
      session  no native attribution: the last eligible touch (klaviyo__eligible_attribution_events) of the
               person within its channel's lookback (klaviyo__<channel>_attribution_lookback hours) before it
      null     organic
    send_at: when the message credited was sent to this person: a campaign's send time (when the event is not
    earlier), or for a flow message the person's latest receipt of it (received, bounced, failed) at or before
    the touch, within klaviyo__send_window_days (else the touch itself). Klaviyo's reports count a message's
    opens, clicks and conversions on the day of this send.

    Incremental on the load marker: each run recomputes every event of each person with a row loaded (or
    re-read, or newly attributed) since the last completed load it saw, because a late event can change the
    last touch of that person's later events; so are the people with an event gone (a deleted touch changes it
    too). Rows of people whose events all vanished are deleted. Each row is stamped with the latest completed
    load (_processed_through_load_id): the models built from this one recompute the people stamped since. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='_person_partition',
    on_schema_change='fail',
    post_hook="{{ klaviyo.drop_vanished('event_id', ref('stg_klaviyo__events'),
                                        'live.person_partition = ' ~ this ~ '._person_partition') }}",
) }}

{%- set fallback = var('klaviyo__attribution_fallback') -%}
{%- if fallback not in ['auto', 'always', 'never'] -%}
    {{ exceptions.raise_compiler_error("klaviyo__attribution_fallback must be auto, always or never, got " ~ fallback) }}
{%- endif -%}
{%- set eligible = var('klaviyo__eligible_attribution_events') -%}
{%- set mm = var('klaviyo__message_metrics') -%}
{%- set sends = mm.get('received', []) + mm.get('bounced', []) + mm.get('failed', []) -%}
{%- set lookback = {
    'email': var('klaviyo__email_attribution_lookback'),
    'sms': var('klaviyo__sms_attribution_lookback'),
    'push': var('klaviyo__push_attribution_lookback')} -%}
{#- what an event is credited to, column by column: its own message's (own_<column> of the event), Klaviyo's
    attribution's (this expression) or its session touch's (own_<column> of the touch) -#}
{%- set credited = {
    'campaign_id': 'coalesce(a.campaign_id, am.campaign_id)',
    'campaign_message_id': 'a.campaign_message_id',
    'flow_id': 'coalesce(a.flow_id, am.flow_id)',
    'flow_message_id': 'a.flow_message_id',
    'message_id': 'coalesce(a.campaign_message_id, a.flow_message_id)',
    'variation_id': 'coalesce(a.flow_message_variation_id, a.flow_message_id, a.campaign_message_id)',
    'channel': 'am.channel',
    'send_at': 'coalesce(ta.own_send_at, am.send_time)'} -%}

with attributions as (
    select * from {{ ref('stg_klaviyo__event_attributions') }}
),

session_allowed as (
    select {% if fallback == 'always' %}true{% elif fallback == 'never' %}false
           {%- else %}not exists (select 1 from attributions){% endif %} as allowed
),

{%- if is_incremental() %}

watermark as (
    select {{ klaviyo.watermark() }} as load_id
),

-- people to recompute: new or re-read events, new attributions, rows whose metric or message was not
-- loaded yet, session-attributed rows once native attributions exist ('~' sorts after every load id: a
-- table without load markers is recomputed whole)
changed as (
    select person_partition from {{ ref('stg_klaviyo__events') }}
    where coalesce(load_id, '~') > (select load_id from watermark)
    union
    select e.person_partition
    from attributions as a
    join {{ ref('stg_klaviyo__events') }} as e on e.event_id = a.event_id
    where coalesce(a.load_id, '~') > (select load_id from watermark)
    union
    -- people with an event gone (soft-deleted, absent after a loader full refresh, or now another profile's after
    -- a merge): a deleted touch changes the credit of their later events
    select t._person_partition from {{ this }} as t
    where not exists (
        select 1 from {{ ref('stg_klaviyo__events') }} as live
        where live.event_id = t.event_id and live.person_partition = t._person_partition
    )
    union
    select _person_partition from {{ this }}
    where metric_name is null
        or (message_id is not null and (channel is null or (campaign_id is null and flow_id is null)))
        or (attribution_source = 'session' and not (select allowed from session_allowed))
),
{%- endif %}

events as (
    select * from {{ ref('stg_klaviyo__events') }}
    {%- if is_incremental() %}
    where person_partition in (select person_partition from changed)
    {%- endif %}
),

messages as (
    select * from {{ ref('stg_klaviyo__messages') }}
),

-- what each event is itself about, and whether it opens an attribution window
resolved as (
    select
        e.*,
        mt.metric_name,
        e.property_message_id is not null as has_own_message,
        coalesce(m.campaign_id, c.campaign_id) as own_campaign_id,
        case when m.message_type = 'campaign' then m.message_id end as own_campaign_message_id,
        coalesce(m.flow_id, e.property_flow_id) as own_flow_id,
        case when m.message_type = 'flow' then m.message_id
             when m.message_id is null and e.property_flow_id is not null then e.property_message_id
        end as own_flow_message_id,
        -- a message not loaded (yet) is still named; $message naming a campaign is no message id
        case when c.campaign_id is null then e.property_message_id end as own_message_id,
        coalesce(e.property_variation_id, e.property_message_id) as own_variation_id,
        coalesce(m.channel,
                 case when lower(mt.metric_name) like '%sms%' then 'sms'
                      when lower(mt.metric_name) like '%push%' then 'push' else 'email' end) as own_channel,
        e.property_message_id is not null and {{ klaviyo.in_names('mt.metric_name', eligible) }} as is_touch,
        e.property_message_id is not null and {{ klaviyo.in_names('mt.metric_name', sends) }} as is_send,
        -- an event cannot precede its campaign's send: where it does, the send time on record is not when this
        -- person's message went out (a campaign sent in recipients' local time, or sent again), which then
        -- dates it like a flow message's
        case when m.message_type = 'campaign' and m.send_time <= e.occurred_at then m.send_time end
            as campaign_send_at
    from events as e
    left join {{ ref('stg_klaviyo__metrics') }} as mt on mt.metric_id = e.metric_id
    left join messages as m on m.message_id = e.property_message_id
    -- events of older integrations name the campaign itself in $message
    left join {{ ref('stg_klaviyo__campaigns') }} as c
        on m.message_id is null and c.campaign_id = e.property_message_id
),

-- per person and channel, the number of touches so far (touches sort first within a second); per person
-- and message, the latest send so far
ordered as (
    select
        r.*,
        {%- for ch in ['email', 'sms', 'push'] %}
        sum(case when r.is_touch and r.own_channel = '{{ ch }}' then 1 else 0 end) over person_time
            as {{ ch }}_touches,
        {%- endfor %}
        max(case when r.is_send then r.occurred_at end) over (
            partition by r.person_partition, r.property_message_id
            order by r.occurred_at, case when r.is_send then 0 else 1 end, r.event_id
            rows between unbounded preceding and current row
        ) as last_receipt_at
    from resolved as r
    window person_time as (
        partition by r.person_partition
        order by r.occurred_at, case when r.is_touch then 0 else 1 end, r.event_id
        rows between unbounded preceding and current row
    )
),

-- when the message of a message event was sent: a campaign's send time; for a flow message the person's latest
-- receipt of it within klaviyo__send_window_days, else the event itself (an event with no receipt before it
-- starts its own send)
dated as (
    select
        o.*,
        case when o.has_own_message then coalesce(
            o.campaign_send_at,
            case when o.last_receipt_at >= o.occurred_at - {{ klaviyo.hours(24 * var('klaviyo__send_window_days')) }}
                 then o.last_receipt_at end,
            o.occurred_at) end as own_send_at
    from ordered as o
),

touches as (
    select
        person_partition,
        own_channel,
        case own_channel when 'email' then email_touches when 'sms' then sms_touches else push_touches end
            as touch_number,
        event_id as touch_event_id,
        occurred_at as touch_at,
        own_campaign_id, own_campaign_message_id, own_flow_id, own_flow_message_id, own_message_id, own_variation_id,
        own_send_at
    from dated
    where is_touch
),

-- the latest touch of each channel, if the event falls inside that channel's lookback
candidates as (
    select
        o.event_id,
        o.person_partition,
        {%- for ch in ['email', 'sms', 'push'] %}
        t_{{ ch }}.touch_at as {{ ch }}_at,
        t_{{ ch }}.touch_event_id as {{ ch }}_event_id{{ "," if not loop.last }}
        {%- endfor %}
    from dated as o
    {%- for ch in ['email', 'sms', 'push'] %}
    left join touches as t_{{ ch }}
        on t_{{ ch }}.person_partition = o.person_partition
        and t_{{ ch }}.own_channel = '{{ ch }}'
        and t_{{ ch }}.touch_number = o.{{ ch }}_touches
        and o.occurred_at <= t_{{ ch }}.touch_at + {{ klaviyo.hours(lookback[ch]) }}
    {%- endfor %}
    where not o.has_own_message
        and (select allowed from session_allowed)
        and not exists (select 1 from attributions as a where a.event_id = o.event_id)
        and (o.email_touches > 0 or o.sms_touches > 0 or o.push_touches > 0)
),

-- of those, the latest (ties in the same second: the larger event id)
latest as (
    select
        event_id,
        person_partition,
        greatest(
            {%- for ch in ['email', 'sms', 'push'] %}
            case when {{ ch }}_at = latest_at then {{ ch }}_event_id end{{ "," if not loop.last }}
            {%- endfor %}
        ) as touch_event_id
    from (
        select *, greatest(email_at, sms_at, push_at) as latest_at from candidates
    ) as c
    where latest_at is not null
),

session as (
    select l.event_id, t.*
    from latest as l
    join touches as t on t.person_partition = l.person_partition and t.touch_event_id = l.touch_event_id
),

final as (
    select
        o.event_id,
        o.event_uuid,
        o.occurred_at,
        o.metric_id,
        o.metric_name,
        o.person_id,
        o.numeric_value,
        case when o.has_own_message then 'message'
             when a.event_id is not null then 'native'
             when s.event_id is not null then 'session' end as attribution_source,
        {%- for column, native in credited.items() %}
        case when o.has_own_message then o.own_{{ column }}
             when a.event_id is not null then {{ native }}
             else s.own_{{ column }} end as {{ column }},
        {%- endfor %}
        case when a.event_id is not null then a.attributed_event_id else s.touch_event_id end
            as attributed_event_id,
        o.load_id as _dlt_load_id,
        through.load_id as _processed_through_load_id,
        o.person_partition as _person_partition
    from dated as o
    cross join (
        select coalesce({{ klaviyo.latest_completed_load() }}, (select max(load_id) from events)) as load_id
    ) as through
    left join attributions as a on not o.has_own_message and a.event_id = o.event_id
    left join messages as am on am.message_id = coalesce(a.campaign_message_id, a.flow_message_id)
    left join dated as ta on ta.event_id = a.attributed_event_id
    left join session as s on s.event_id = o.event_id
)

select * from final
