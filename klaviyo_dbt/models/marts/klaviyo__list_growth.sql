{#- Daily growth of every list from its memberships (macros/pivots.sql membership_growth). -#}
{{ klaviyo.membership_growth('list') }}
