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

{#- Aggregates over a message's own events (columns metric_name, person_id): what each statistic counts, as
    klaviyo__message_metrics maps metrics to received / opened / clicked / bounced / failed / unsubscribed / spam. -#}
{% macro message_tallies() -%}
    {%- set mm = var('klaviyo__message_metrics') -%}
    {%- for kind in ['received', 'opened', 'clicked', 'bounced', 'failed', 'unsubscribed', 'spam'] %}
    count(case when {{ klaviyo.in_names('metric_name', mm.get(kind, [])) }} then 1 end) as {{ kind }},
    {%- endfor %}
    {%- for kind in ['opened', 'clicked', 'unsubscribed'] %}
    count(distinct case when {{ klaviyo.in_names('metric_name', mm.get(kind, [])) }} then person_id end)
        as {{ kind }}_people{{ "," if not loop.last }}
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
