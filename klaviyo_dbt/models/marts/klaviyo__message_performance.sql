{#- One row per message x variation x send day (account timezone) x conversion metric, with Klaviyo's
    statistics by their Reporting API names and definitions (macros/statistics.sql). As in Klaviyo's reports,
    figures count on the day the message was sent (klaviyo__events.send_at): an open, click or conversion days
    later counts on its send's day. Uniques are distinct people within the row: across days add up counts, not
    uniques (klaviyo__campaigns / klaviyo__flows count unique people over a whole campaign or flow).

    Incremental: a run recounts the (message, variation, send day) whose people's events changed since its last
    build (int_klaviyo__message_person_days rows stamped since, those that lost events included), and every day of
    a message whose name, type, owner or channel changed or that is not loaded (its owner comes from its events),
    and every row when the conversion metrics changed; days left with no event are deleted. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='message_performance_key',
    on_schema_change='fail',
    post_hook="{% if is_incremental() %}delete from {{ this }} where not exists (
        select 1 from {{ ref('int_klaviyo__message_person_days') }} as l
        where l.events > 0 and l.message_id = {{ this }}.message_id and l.day = {{ this }}.send_day
            and coalesce(l.variation_id, '') = coalesce({{ this }}.variation_id, ''))
        {% endif %}",
) }}

with ledger as (
    select * from {{ ref('int_klaviyo__message_person_days') }}
    where events > 0
),

conversion_metrics as (
    select metric_id as conversion_metric_id, metric_name as conversion_metric_name
    from {{ ref('stg_klaviyo__metrics') }}
    where {{ klaviyo.in_names('metric_name', var('klaviyo__conversion_metrics')) }}
),

{%- if is_incremental() %}

-- messages whose description changed, or that are not loaded (their owner and channel come from their events)
redescribed as (
    select t.message_id
    from {{ this }} as t
    left join {{ ref('stg_klaviyo__messages') }} as m on m.message_id = t.message_id
    where m.message_id is null
        or t.message_name is distinct from m.message_name
        or t.message_type is distinct from m.message_type
        or t.campaign_id is distinct from m.campaign_id
        or t.flow_id is distinct from m.flow_id
        or t.send_channel is distinct from {{ klaviyo.send_channel('m.channel') }}
),

touched as (
    select distinct message_id, coalesce(variation_id, '') as variation_key, day
    from {{ ref('int_klaviyo__message_person_days') }}
    where coalesce(_changed_through_load_id, '~') > {{ klaviyo.watermark() }}
),

-- every message when the conversion metrics changed (one loaded since, renamed, no longer a conversion metric)
regridded as (
    select t.message_id from {{ this }} as t
    where exists (
        (select conversion_metric_id, conversion_metric_name from conversion_metrics
         except
         select conversion_metric_id, conversion_metric_name from {{ this }})
        union all
        (select conversion_metric_id, conversion_metric_name from {{ this }}
         except
         select conversion_metric_id, conversion_metric_name from conversion_metrics)
    )
),

touched_messages as (
    select message_id from redescribed
    union
    select message_id from regridded
    union
    select t.message_id from touched as t
    where not exists (select 1 from {{ ref('stg_klaviyo__messages') }} as m where m.message_id = t.message_id)
),

scope as (
    select l.* from ledger as l
    where l.message_id in (select message_id from touched_messages)
        or exists (
            select 1 from touched as t
            where t.message_id = l.message_id and t.variation_key = coalesce(l.variation_id, '') and t.day = l.day
        )
),
{%- else %}

scope as (
    select * from ledger
),
{%- endif %}

own as (
    select message_id, variation_id, day, {{ klaviyo.message_tallies(events='events') }}
    from scope
    where is_own
    group by message_id, variation_id, day
),

conversions as (
    select
        message_id,
        variation_id,
        day,
        metric_id,
        {{ klaviyo.conversion_tallies(events='events') }}
    from scope
    where not is_own
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
    from ledger
    where message_id in (select message_id from grid)
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
    {{ klaviyo.send_channel('coalesce(m.channel, w.channel)') }} as send_channel,
    {{ klaviyo.message_statistics('t') }},
    {{ klaviyo.latest_stamp('int_klaviyo__message_person_days') }} as _processed_through_load_id
from tallied as t
left join {{ ref('stg_klaviyo__messages') }} as m on m.message_id = t.message_id
left join owners as w on w.message_id = t.message_id
