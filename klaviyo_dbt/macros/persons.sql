{#- klaviyo__persons' RFM scores and days since the last order: they rank each person among all who ordered and
    count to the latest event, so a new order changes other people's; they are set over the whole table after
    every build, full or incremental.

    Scores are quintiles (5 best) of the latest order, the order count and the lifetime revenue; ties share the
    score of the first of them (when most people ordered once, once is frequency 1). -#}
{% macro score_persons() -%}
    {%- set scores = [('recency', 'last_order_at'), ('frequency', 'order_count'), ('monetary', 'lifetime_revenue')] -%}
update {{ this }}
set
    {%- for score, column in scores %}
    {{ score }}_score = s.{{ score }}_score,
    {%- endfor %}
    rfm_segment = cast(s.recency_score as text) || cast(s.frequency_score as text) || cast(s.monetary_score as text),
    days_since_last_order = s.days_since_last_order
from (
    select
        person_id,
        {%- for score, column in scores %}
        cast(least(5, 1 + floor(5 * percent_rank() over (order by {{ column }}))) as integer) as {{ score }}_score,
        {%- endfor %}
        (select {{ klaviyo.local_date('max(occurred_at)') }} from {{ ref('klaviyo__events') }})
            - {{ klaviyo.local_date('last_order_at') }} as days_since_last_order
    from {{ this }}
    where order_count > 0
) as s
where s.person_id = {{ this }}.person_id
{%- endmacro %}
