{#- Klaviyo's message statistics (Reporting API names and definitions), shared by klaviyo__message_performance
    and klaviyo__reconciliation so both count alike. -#}

{#- The statistics and their kind: count, value (money) or rate (a fraction, or an average for
    average_order_value and revenue_per_recipient). -#}
{% macro message_statistic_kinds() -%}
    {{ return({
        'recipients': 'count', 'delivered': 'count', 'delivery_rate': 'rate', 'bounced': 'count',
        'bounce_rate': 'rate', 'failed': 'count', 'failed_rate': 'rate', 'bounced_or_failed': 'count',
        'bounced_or_failed_rate': 'rate', 'opens': 'count', 'opens_unique': 'count', 'open_rate': 'rate',
        'clicks': 'count', 'clicks_unique': 'count', 'click_rate': 'rate', 'click_to_open_rate': 'rate',
        'conversions': 'count', 'conversion_uniques': 'count', 'conversion_value': 'value',
        'conversion_rate': 'rate', 'average_order_value': 'value', 'revenue_per_recipient': 'value',
        'unsubscribes': 'count', 'unsubscribe_uniques': 'count', 'unsubscribe_rate': 'rate',
        'spam_complaints': 'count', 'spam_complaint_rate': 'rate'}) }}
{%- endmacro %}

{#- The tallies the statistics are made of: per kind of message metric (klaviyo__message_metrics) its events,
    and for opened, clicked and unsubscribed also the distinct people. -#}
{% macro message_tally_names() -%}
    {{ return(['received', 'bounced', 'failed', 'opened', 'clicked', 'unsubscribed', 'spam',
               'opened_people', 'clicked_people', 'unsubscribed_people']) }}
{%- endmacro %}

{#- Aggregates over a message's own events (columns metric_name, person_id): the tallies, as klaviyo__message_metrics
    maps metrics to received / opened / clicked / bounced / failed / unsubscribed / spam. `events`: a column with
    the number of events each row stands for (rows of int_klaviyo__message_person_days), none: one per row. -#}
{% macro message_tallies(events=none) -%}
    {%- set mm = var('klaviyo__message_metrics') -%}
    {%- for name in klaviyo.message_tally_names() %}
    {%- set kind = name | replace('_people', '') %}
    {%- if name.endswith('_people') %}
    count(distinct case when {{ klaviyo.in_names('metric_name', mm.get(kind, [])) }} then person_id end) as {{ name }}
    {%- else %}
    {{ klaviyo.count_of(klaviyo.in_names('metric_name', mm.get(kind, [])), events) }} as {{ name }}
    {%- endif %}{{ "," if not loop.last }}
    {%- endfor %}
{%- endmacro %}

{#- Aggregates over credited conversion events (columns person_id, numeric_value; `events` as above). -#}
{% macro conversion_tallies(events=none) -%}
    {{ klaviyo.count_of('true', events) }} as conversions,
    count(distinct person_id) as conversion_uniques,
    coalesce(sum(numeric_value), 0) as conversion_value
{%- endmacro %}

{#- How many events meet `condition`: rows, or the sum of their `events` column. -#}
{% macro count_of(condition, events=none) -%}
    {%- if events -%}
    cast(coalesce(sum(case when {{ condition }} then {{ events }} end), 0) as bigint)
    {%- else -%}
    count(case when {{ condition }} then 1 end)
    {%- endif -%}
{%- endmacro %}

{#- The tallies of `own` (message_tallies) and `conversions` (conversion_tallies) left-joined to a row, 0 where
    that row has none. -#}
{% macro tallies_or_zero(own, conversions) -%}
    {%- for name in klaviyo.message_tally_names() %}
    coalesce({{ own }}.{{ name }}, 0) as {{ name }},
    {%- endfor %}
    {%- for name in ['conversions', 'conversion_uniques', 'conversion_value'] %}
    coalesce({{ conversions }}.{{ name }}, 0) as {{ name }}{{ "," if not loop.last }}
    {%- endfor %}
{%- endmacro %}

{#- The statistics from the tallies (columns of `t`: received, bounced, failed, opened, opened_people, clicked,
    clicked_people, unsubscribed, unsubscribed_people, spam, conversions, conversion_uniques, conversion_value),
    in the order of message_statistic_kinds. -#}
{% macro message_statistics(t) -%}
    {%- set recipients = t ~ '.received + ' ~ t ~ '.bounced + ' ~ t ~ '.failed' -%}
    {{ recipients }} as recipients,
    {{ t }}.received as delivered,
    {{ klaviyo.ratio(t ~ '.received', recipients) }} as delivery_rate,
    {{ t }}.bounced as bounced,
    {{ klaviyo.ratio(t ~ '.bounced', recipients) }} as bounce_rate,
    {{ t }}.failed as failed,
    {{ klaviyo.ratio(t ~ '.failed', recipients) }} as failed_rate,
    {{ t }}.bounced + {{ t }}.failed as bounced_or_failed,
    {{ klaviyo.ratio(t ~ '.bounced + ' ~ t ~ '.failed', recipients) }} as bounced_or_failed_rate,
    {{ t }}.opened as opens,
    {{ t }}.opened_people as opens_unique,
    {{ klaviyo.ratio(t ~ '.opened_people', t ~ '.received') }} as open_rate,
    {{ t }}.clicked as clicks,
    {{ t }}.clicked_people as clicks_unique,
    {{ klaviyo.ratio(t ~ '.clicked_people', t ~ '.received') }} as click_rate,
    {{ klaviyo.ratio(t ~ '.clicked_people', t ~ '.opened_people') }} as click_to_open_rate,
    {{ t }}.conversions as conversions,
    {{ t }}.conversion_uniques as conversion_uniques,
    {{ t }}.conversion_value as conversion_value,
    {{ klaviyo.ratio(t ~ '.conversion_uniques', t ~ '.received') }} as conversion_rate,
    {{ klaviyo.ratio(t ~ '.conversion_value', t ~ '.conversions') }} as average_order_value,
    {{ klaviyo.ratio(t ~ '.conversion_value', t ~ '.received') }} as revenue_per_recipient,
    {{ t }}.unsubscribed as unsubscribes,
    {{ t }}.unsubscribed_people as unsubscribe_uniques,
    {{ klaviyo.ratio(t ~ '.unsubscribed_people', t ~ '.received') }} as unsubscribe_rate,
    {{ t }}.spam as spam_complaints,
    {{ klaviyo.ratio(t ~ '.spam', t ~ '.received') }} as spam_complaint_rate
{%- endmacro %}

{#- Klaviyo's name of a message's channel (`push-notification` for push). -#}
{% macro send_channel(channel) -%}
    case {{ channel }} when 'push' then 'push-notification' else {{ channel }} end
{%- endmacro %}

{#- The key of a row of Klaviyo's reports (stg_klaviyo__message_reports as `r`). -#}
{% macro report_key(r) -%}
    {{ klaviyo.key([r ~ '.report', r ~ '.message_id', r ~ '.send_channel', r ~ '.conversion_metric_id',
                    r ~ '.first_day', r ~ '.end_day']) }}
{%- endmacro %}
