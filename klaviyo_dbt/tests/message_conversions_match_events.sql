-- Conversions in klaviyo__message_performance add up, per message and conversion metric, to the credited
-- conversion events of klaviyo__events.
with performance as (
    select message_id, conversion_metric_id, sum(conversions) as conversions, sum(conversion_value) as value
    from {{ ref('klaviyo__message_performance') }}
    where conversion_metric_id is not null
    group by message_id, conversion_metric_id
),

events as (
    select message_id, metric_id, count(*) as conversions, coalesce(sum(numeric_value), 0) as value
    from {{ ref('klaviyo__events') }}
    where attribution_source in ('native', 'session')
        and metric_id in (select conversion_metric_id from {{ ref('klaviyo__message_performance') }})
    group by message_id, metric_id
)

select coalesce(p.message_id, e.message_id) as message_id, p.conversions, e.conversions
from performance as p
full outer join events as e on e.message_id = p.message_id and e.metric_id = p.conversion_metric_id
where coalesce(p.conversions, 0) <> coalesce(e.conversions, 0)
    or abs(coalesce(p.value, 0) - coalesce(e.value, 0)) > 0.000001
