{#- Daily growth of every segment from its memberships (macros/pivots.sql membership_growth). -#}
{{ klaviyo.membership_growth('segment') }}
