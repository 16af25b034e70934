{#- One row per message x variation x send day (account timezone) x conversion metric, with Klaviyo's
    statistics by their Reporting API names and definitions. As in Klaviyo's reports, figures count on the day
    the message was sent (klaviyo__events.send_at): an open, click or conversion days later counts on its send's
    day. Counts are of the message's own events (received, opened, ... as klaviyo__message_metrics says),
    unique = distinct people, rates are fractions (0 without a base), conversions = events of the conversion
    metric credited to the message (native or session attribution). Uniques are per row: across days add up
    counts, not uniques (klaviyo__campaigns / klaviyo__flows count unique people over a whole campaign or flow). -#}
{%- set mm = var('klaviyo__message_metrics') -%}
{%- set kinds = ['received', 'opened', 'clicked', 'bounced', 'failed', 'unsubscribed', 'spam'] -%}
with events as (
    select
        message_id, variation_id, person_id, metric_id, metric_name, numeric_value, attribution_source,
        campaign_id, flow_id, channel, {{ klaviyo.local_date('coalesce(send_at, occurred_at)') }} as day
    from {{ ref('klaviyo__events') }}
    where message_id is not null
),

own as (
    select
        message_id,
        variation_id,
        day,
        {%- for kind in kinds %}
        count(case when {{ klaviyo.in_names('metric_name', mm.get(kind, [])) }} then 1 end) as {{ kind }},
        {%- endfor %}
        count(distinct case when {{ klaviyo.in_names('metric_name', mm.get('opened', [])) }} then person_id end)
            as opened_people,
        count(distinct case when {{ klaviyo.in_names('metric_name', mm.get('clicked', [])) }} then person_id end)
            as clicked_people,
        count(distinct case when {{ klaviyo.in_names('metric_name', mm.get('unsubscribed', [])) }} then person_id end)
            as unsubscribed_people
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
        count(*) as conversions,
        count(distinct person_id) as conversion_uniques,
        coalesce(sum(numeric_value), 0) as conversion_value
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

counted as (
    select
        g.*,
        coalesce(o.received, 0) + coalesce(o.bounced, 0) + coalesce(o.failed, 0) as recipients,
        coalesce(o.received, 0) as delivered,
        coalesce(o.bounced, 0) as bounced,
        coalesce(o.failed, 0) as failed,
        coalesce(o.opened, 0) as opens,
        coalesce(o.opened_people, 0) as opens_unique,
        coalesce(o.clicked, 0) as clicks,
        coalesce(o.clicked_people, 0) as clicks_unique,
        coalesce(o.unsubscribed, 0) as unsubscribes,
        coalesce(o.unsubscribed_people, 0) as unsubscribe_uniques,
        coalesce(o.spam, 0) as spam_complaints,
        coalesce(c.conversions, 0) as conversions,
        coalesce(c.conversion_uniques, 0) as conversion_uniques,
        coalesce(c.conversion_value, 0) as conversion_value
    from grid as g
    left join own as o
        on o.message_id = g.message_id and o.variation_id = g.variation_id and o.day = g.day
    left join conversions as c
        on c.message_id = g.message_id and c.variation_id = g.variation_id and c.day = g.day
        and c.metric_id = g.conversion_metric_id
)

select
    {{ klaviyo.key(['c.message_id', 'c.variation_id', 'c.day', 'c.conversion_metric_id']) }} as message_performance_key,
    c.message_id,
    c.variation_id,
    c.day as send_day,
    c.conversion_metric_id,
    c.conversion_metric_name,
    coalesce(m.message_type, case when w.campaign_id is not null then 'campaign' else 'flow' end) as message_type,
    coalesce(m.campaign_id, w.campaign_id) as campaign_id,
    coalesce(m.flow_id, w.flow_id) as flow_id,
    m.message_name,
    case coalesce(m.channel, w.channel) when 'push' then 'push-notification' else coalesce(m.channel, w.channel) end
        as send_channel,
    c.recipients,
    c.delivered,
    {{ klaviyo.ratio('c.delivered', 'c.recipients') }} as delivery_rate,
    c.bounced,
    {{ klaviyo.ratio('c.bounced', 'c.recipients') }} as bounce_rate,
    c.failed,
    {{ klaviyo.ratio('c.failed', 'c.recipients') }} as failed_rate,
    c.bounced + c.failed as bounced_or_failed,
    {{ klaviyo.ratio('c.bounced + c.failed', 'c.recipients') }} as bounced_or_failed_rate,
    c.opens,
    c.opens_unique,
    {{ klaviyo.ratio('c.opens_unique', 'c.delivered') }} as open_rate,
    c.clicks,
    c.clicks_unique,
    {{ klaviyo.ratio('c.clicks_unique', 'c.delivered') }} as click_rate,
    {{ klaviyo.ratio('c.clicks_unique', 'c.opens_unique') }} as click_to_open_rate,
    c.conversions,
    c.conversion_uniques,
    c.conversion_value,
    {{ klaviyo.ratio('c.conversion_uniques', 'c.delivered') }} as conversion_rate,
    {{ klaviyo.ratio('c.conversion_value', 'c.conversions') }} as average_order_value,
    {{ klaviyo.ratio('c.conversion_value', 'c.delivered') }} as revenue_per_recipient,
    c.unsubscribes,
    c.unsubscribe_uniques,
    {{ klaviyo.ratio('c.unsubscribe_uniques', 'c.delivered') }} as unsubscribe_rate,
    c.spam_complaints,
    {{ klaviyo.ratio('c.spam_complaints', 'c.delivered') }} as spam_complaint_rate
from counted as c
left join {{ ref('stg_klaviyo__messages') }} as m on m.message_id = c.message_id
left join owners as w on w.message_id = c.message_id
