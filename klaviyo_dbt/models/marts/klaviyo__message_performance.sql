{#- One row per message x variation x send day (account timezone) x conversion metric, with Klaviyo's
    statistics by their Reporting API names and definitions (macros/statistics.sql). As in Klaviyo's reports,
    figures count on the day the message was sent (klaviyo__events.send_at): an open, click or conversion days
    later counts on its send's day. Uniques are distinct people within the row: across days add up counts, not
    uniques (klaviyo__campaigns / klaviyo__flows count unique people over a whole campaign or flow). -#}
with events as (
    select
        message_id, variation_id, person_id, metric_id, metric_name, numeric_value, attribution_source,
        campaign_id, flow_id, channel, {{ klaviyo.local_date('coalesce(send_at, occurred_at)') }} as day
    from {{ ref('klaviyo__events') }}
    where message_id is not null
),

own as (
    select message_id, variation_id, day, {{ klaviyo.message_tallies() }}
    from events
    where attribution_source = 'message'
    group by message_id, variation_id, day
),

conversion_metrics as (
    select metric_id as conversion_metric_id, metric_name as conversion_metric_name
    from {{ ref('stg_klaviyo__metrics') }}
    where {{ klaviyo.in_names('metric_name', var('klaviyo__conversion_metrics')) }}
),

conversions as (
    select
        message_id,
        variation_id,
        day,
        metric_id,
        {{ klaviyo.conversion_tallies() }}
    from events
    where attribution_source in ('native', 'session')
        and metric_id in (select conversion_metric_id from conversion_metrics)
    group by message_id, variation_id, day, metric_id
),

grid as (
    select k.message_id, k.variation_id, k.day, cm.conversion_metric_id, cm.conversion_metric_name
    from (
        select message_id, variation_id, day from own
        union
        select message_id, variation_id, day from conversions
    ) as k
    left join conversion_metrics as cm on 1 = 1
),

owners as (
    select message_id, max(campaign_id) as campaign_id, max(flow_id) as flow_id, max(channel) as channel
    from events
    group by message_id
),

tallied as (
    select
        g.*,
        {{- klaviyo.tallies_or_zero('o', 'c') }}
    from grid as g
    left join own as o
        on o.message_id = g.message_id and o.variation_id = g.variation_id and o.day = g.day
    left join conversions as c
        on c.message_id = g.message_id and c.variation_id = g.variation_id and c.day = g.day
        and c.metric_id = g.conversion_metric_id
)

select
    {{ klaviyo.key(['t.message_id', 't.variation_id', 't.day', 't.conversion_metric_id']) }} as message_performance_key,
    t.message_id,
    t.variation_id,
    t.day as send_day,
    t.conversion_metric_id,
    t.conversion_metric_name,
    coalesce(m.message_type, case when w.campaign_id is not null then 'campaign' else 'flow' end) as message_type,
    coalesce(m.campaign_id, w.campaign_id) as campaign_id,
    coalesce(m.flow_id, w.flow_id) as flow_id,
    m.message_name,
    case coalesce(m.channel, w.channel) when 'push' then 'push-notification' else coalesce(m.channel, w.channel) end
        as send_channel,
    {{ klaviyo.message_statistics('t') }}
from tallied as t
left join {{ ref('stg_klaviyo__messages') }} as m on m.message_id = t.message_id
left join owners as w on w.message_id = t.message_id
