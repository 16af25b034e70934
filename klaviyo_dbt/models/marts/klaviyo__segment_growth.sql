{#- Daily growth of every segment from its memberships, with Klaviyo's own daily figures beside them where the
    segment series reports are loaded (macros/pivots.sql membership_growth). -#}
{{ klaviyo.membership_growth('segment', ref('stg_klaviyo__segment_reports')) }}
