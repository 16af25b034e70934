-- On its last day, a list's or segment's running total is its current membership (members not removed).
{%- for kind in ['list', 'segment'] %}
select '{{ kind }}' as kind, g.{{ kind }}_id, g.total_members, coalesce(m.members, 0) as members
from {{ ref('klaviyo__' ~ kind ~ '_growth') }} as g
left join (
    select m.{{ kind }}_id, count(*) as members
    from {{ ref('stg_klaviyo__' ~ kind ~ '_members') }} as m
    join {{ ref('stg_klaviyo__profiles') }} as p on p.person_id = m.person_id and p.deleted_at is null
    where m.removed_at is null and m.joined_at is not null
    group by m.{{ kind }}_id
) as m on m.{{ kind }}_id = g.{{ kind }}_id
where g.day = (select max(day) from {{ ref('klaviyo__' ~ kind ~ '_growth') }})
    and g.total_members <> coalesce(m.members, 0)
{{ "union all" if not loop.last }}
{%- endfor %}
