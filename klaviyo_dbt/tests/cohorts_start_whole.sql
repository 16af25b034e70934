-- Every customer orders in the month of their first order: month 0 of a cohort is the whole cohort.
select cohort_month, cohort_size, active_customers
from {{ ref('klaviyo__order_cohorts') }}
where months_since_first_order = 0 and active_customers <> cohort_size
