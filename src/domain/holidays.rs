//! The public holidays of the Labour Code 2019 (Bộ luật Lao động 45/2019/QH14,
//! art. 111–112), computed for any year instead of listed in configuration.
//!
//! - 1 January;
//! - Tết Nguyên đán: the last day of the lunar year and the first four days of
//!   the new one (the statute says five days and lets the Prime Minister pick
//!   them; this is the default span);
//! - the Hùng Kings' day, 10th day of the 3rd lunar month;
//! - 30 April and 1 May;
//! - 2 September and the day before it (the statute says "one adjacent day,
//!   before or after");
//! - compensation (art. 111(3)): each of these days that falls on a Saturday
//!   or Sunday gives one day off on the next weekday that is neither one of
//!   them nor already given in compensation.
//!
//! Lunar dates come from [`super::lunar`] (Vietnamese calendar, UTC+7).

use std::collections::BTreeSet;
use std::sync::OnceLock;

use jiff::civil::{Date, Weekday};

use super::lunar::{self, FIRST_YEAR, LAST_YEAR, LunarDate};

/// Years are computed once each, on first use, and kept for the process.
const YEARS: usize = (LAST_YEAR - FIRST_YEAR + 1) as usize;
static CACHE: [OnceLock<Box<[Date]>>; YEARS] = [const { OnceLock::new() }; YEARS];

/// Whether `d` is Saturday or Sunday, the weekly rest days of public offices.
pub fn is_weekend(d: Date) -> bool {
    matches!(d.weekday(), Weekday::Saturday | Weekday::Sunday)
}

/// The statutory days off of `year`, compensatory days included, sorted.
/// Years outside the lunar calendar's range ([`FIRST_YEAR`] to [`LAST_YEAR`])
/// have none.
pub fn statutory(year: i16) -> &'static [Date] {
    if !(FIRST_YEAR..=LAST_YEAR).contains(&year) {
        return &[];
    }
    CACHE[(year - FIRST_YEAR) as usize].get_or_init(|| compute(year).into_boxed_slice())
}

/// Whether `d` is a statutory day off (a holiday or a compensatory day).
pub fn is_statutory_day_off(d: Date) -> bool {
    statutory(d.year()).binary_search(&d).is_ok()
}

/// The holidays themselves (no compensation), for a year in range.
fn holidays(year: i16) -> BTreeSet<Date> {
    let day = |month, day| Date::new(year, month, day).expect("a valid solar date");
    let tet = lunar::new_year(year);
    let hung = lunar::to_solar(LunarDate {
        year,
        month: 3,
        day: 10,
        leap: false,
    })
    .expect("every lunar year has a 10th day of its 3rd month");
    let mut days = BTreeSet::from([day(1, 1), hung, day(4, 30), day(5, 1), day(9, 1), day(9, 2)]);
    // The last day of the old lunar year and days 1 to 4 of the new one.
    days.extend((-1..=3).map(|n| {
        tet.checked_add(jiff::Span::new().days(n))
            .expect("in range")
    }));
    days
}

fn compute(year: i16) -> Vec<Date> {
    let holidays = holidays(year);
    let mut off = holidays.clone();
    for h in holidays.iter().filter(|d| is_weekend(**d)) {
        let mut d = *h;
        while is_weekend(d) || off.contains(&d) {
            d = d.tomorrow().expect("in range");
        }
        off.insert(d);
    }
    off.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dates(list: &[&str]) -> Vec<Date> {
        list.iter().map(|d| d.parse().unwrap()).collect()
    }

    #[test]
    fn the_2026_statute_is_what_was_decreed() {
        // Decreed for 2026: 1 Jan; Tết 16–20 Feb (Mon–Fri); Hùng Kings' day
        // Sun 26 Apr, off on Mon 27 Apr; 30 Apr and 1 May; 1–2 Sep.
        assert_eq!(
            statutory(2026),
            dates(&[
                "2026-01-01",
                "2026-02-16",
                "2026-02-17",
                "2026-02-18",
                "2026-02-19",
                "2026-02-20",
                "2026-04-26",
                "2026-04-27",
                "2026-04-30",
                "2026-05-01",
                "2026-09-01",
                "2026-09-02",
            ])
        );
    }

    #[test]
    fn the_2025_statute() {
        // Tết: 28 Jan (last day of Giáp Thìn) to 1 Feb (Sat), compensated on
        // Mon 3 Feb. The decree gave 25 Jan–2 Feb instead (Mon 27 Jan off,
        // made up on Sat 8 Feb): configuration, not statute. Hùng Kings' day
        // Mon 7 Apr; 30 Apr–1 May; Sep 2 is a Tuesday, so 1–2 Sep, as decreed.
        assert_eq!(
            statutory(2025),
            dates(&[
                "2025-01-01",
                "2025-01-28",
                "2025-01-29",
                "2025-01-30",
                "2025-01-31",
                "2025-02-01",
                "2025-02-03",
                "2025-04-07",
                "2025-04-30",
                "2025-05-01",
                "2025-09-01",
                "2025-09-02",
            ])
        );
    }

    #[test]
    fn the_2024_statute() {
        // Tết: 9 Feb (last day of Quý Mão) to 13 Feb; Sat 10 and Sun 11 are
        // compensated on 14 and 15 Feb. The decree gave 8–14 Feb (29 tháng
        // Chạp to mùng 3, compensated on 13–14): configuration adds 8 Feb and
        // makes 15 Feb a working day. National Day: Sun 1 Sep compensated on
        // Tue 3 Sep, so 2–3 Sep off, as decreed (31 Aug–3 Sep).
        assert_eq!(
            statutory(2024),
            dates(&[
                "2024-01-01",
                "2024-02-09",
                "2024-02-10",
                "2024-02-11",
                "2024-02-12",
                "2024-02-13",
                "2024-02-14",
                "2024-02-15",
                "2024-04-18",
                "2024-04-30",
                "2024-05-01",
                "2024-09-01",
                "2024-09-02",
                "2024-09-03",
            ])
        );
    }

    #[test]
    fn a_new_year_on_a_saturday_is_compensated_on_monday() {
        // 1 Jan 2028 is a Saturday.
        assert!(is_statutory_day_off("2028-01-03".parse().unwrap()));
        assert!(!is_statutory_day_off("2028-01-04".parse().unwrap()));
    }

    #[test]
    fn every_year_in_range_has_eleven_holidays_at_least() {
        for year in FIRST_YEAR..=LAST_YEAR {
            let days = statutory(year);
            assert!(days.len() >= 11, "{year}: {days:?}");
            assert!(days.iter().all(|d| d.year() == year), "{year}");
            assert!(days.windows(2).all(|w| w[0] < w[1]), "{year}");
        }
        assert!(statutory(FIRST_YEAR - 1).is_empty());
    }
}
