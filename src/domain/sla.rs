//! The legal delivery time (Thông tư 17/2017/TT-BTTTT, Điều 7): J+n working
//! days, J being the Vietnam-time day the item was taken over.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use jiff::civil::Date;

use super::holidays;
use super::request::Address;
use super::time::vietnam;

/// Working days: weekdays, less the statutory public holidays (computed for
/// every year, see [`super::holidays`]) and the decreed extra days off, plus
/// the decreed make-up days.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Calendar {
    extra_holidays: BTreeSet<Date>,
    extra_working_days: BTreeSet<Date>,
}

impl Calendar {
    /// The statute plus the decreed days off and make-up working days (a
    /// make-up day wins over any day off).
    pub fn new(extra_holidays: &[Date], extra_working_days: &[Date]) -> Self {
        Self {
            extra_holidays: extra_holidays.iter().copied().collect(),
            extra_working_days: extra_working_days.iter().copied().collect(),
        }
    }

    pub fn is_working_day(&self, d: Date) -> bool {
        if self.extra_working_days.contains(&d) {
            return true;
        }
        !holidays::is_weekend(d)
            && !self.extra_holidays.contains(&d)
            && !holidays::is_statutory_day_off(d)
    }

    /// The `n`-th working day after `j` (`j` itself never counts).
    pub fn nth_working_day_after(&self, j: Date, n: u32) -> Date {
        let mut d = j;
        let mut left = n;
        while left > 0 {
            d = d.tomorrow().expect("dates stay within jiff's range");
            if self.is_working_day(d) {
                left -= 1;
            }
        }
        d
    }

    /// How far the decreed days reach: 31 December of the latest year in
    /// which an extra holiday or make-up day is configured; `None` when there
    /// is none (the statutory holidays never run out).
    pub fn last_day(&self) -> Option<Date> {
        let latest = self
            .extra_holidays
            .iter()
            .chain(&self.extra_working_days)
            .map(|d| d.year())
            .max()?;
        Date::new(latest, 12, 31).ok()
    }
}

/// `[sla]` and `[calendar]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlaRules {
    pub class_one_provinces: BTreeSet<String>,
    /// Ward code → n working days.
    pub remote_wards: BTreeMap<String, u8>,
    pub calendar: Calendar,
}

impl SlaRules {
    /// n of the J+n table for a route.
    pub fn working_days(&self, from: &Address, to: &Address, return_appointment_slip: bool) -> u32 {
        let remote = [from, to]
            .iter()
            .filter_map(|a| self.remote_wards.get(&a.ward_code))
            .max()
            .copied();
        let n = match remote {
            Some(n) => u32::from(n),
            None if from.ward_code == to.ward_code && from.province_code == to.province_code => 1,
            None if from.province_code == to.province_code => 2,
            None if self.class_one_provinces.contains(&from.province_code)
                && self.class_one_provinces.contains(&to.province_code) =>
            {
                3
            }
            None => 4,
        };
        if return_appointment_slip { 2 * n } else { n }
    }

    /// `sla_due_at`: 23:59:59+07:00 on the n-th working day after the day
    /// (Vietnam time) the item was taken over.
    pub fn due_at(
        &self,
        taken_over: Timestamp,
        from: &Address,
        to: &Address,
        slip: bool,
    ) -> Timestamp {
        let j = taken_over.to_zoned(vietnam()).date();
        let n = self.working_days(from, to, slip);
        let day = self.calendar.nth_working_day_after(j, n);
        day.at(23, 59, 59, 0)
            .to_zoned(vietnam())
            .expect("a fixed offset always resolves")
            .timestamp()
    }
}

/// The reform index's rule: a handoff is on time when it was delivered no
/// later than its legal deadline (`sla_due_at`); the statistics and the
/// console judge by it.
pub fn delivered_on_time<T: PartialOrd>(delivered: T, due: T) -> bool {
    delivered <= due
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn addr(ward: &str, province: &str) -> Address {
        Address {
            line: "x".into(),
            ward_code: ward.into(),
            province_code: province.into(),
        }
    }

    fn rules() -> SlaRules {
        let holidays: Vec<Date> = [
            "2026-01-01",
            "2026-02-16",
            "2026-02-17",
            "2026-02-18",
            "2026-02-19",
            "2026-02-20",
            "2026-04-27",
            "2026-04-30",
            "2026-05-01",
            "2026-09-01",
            "2026-09-02",
        ]
        .iter()
        .map(|d| d.parse().unwrap())
        .collect();
        SlaRules {
            class_one_provinces: ["01", "31", "48", "79", "92"].map(String::from).into(),
            remote_wards: BTreeMap::from([("26732".to_owned(), 4)]),
            calendar: Calendar::new(&holidays, &[date(2026, 5, 9)]),
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn every_route_class_gets_its_n() {
        let r = rules();
        assert_eq!(
            r.working_days(&addr("00004", "01"), &addr("00004", "01"), false),
            1
        );
        assert_eq!(
            r.working_days(&addr("00004", "01"), &addr("00007", "01"), false),
            2
        );
        assert_eq!(
            r.working_days(&addr("00004", "01"), &addr("26734", "79"), false),
            3
        );
        assert_eq!(
            r.working_days(&addr("00004", "01"), &addr("11111", "22"), false),
            4
        );
        assert_eq!(
            r.working_days(&addr("26732", "79"), &addr("26734", "79"), false),
            4,
            "remote ward"
        );
        assert_eq!(
            r.working_days(&addr("00004", "01"), &addr("11111", "22"), true),
            8,
            "with the slip"
        );
        assert_eq!(
            r.working_days(&addr("26732", "79"), &addr("00004", "01"), true),
            8
        );
    }

    #[test]
    fn weekends_are_skipped() {
        // Friday 27 Nov 2026 + 1 working day = Monday 30 Nov.
        let r = rules();
        let due = r.due_at(
            at("2026-11-27T10:00:00+07:00"),
            &addr("1", "01"),
            &addr("1", "01"),
            false,
        );
        assert_eq!(due, at("2026-11-30T23:59:59+07:00"));
    }

    #[test]
    fn j_is_the_vietnam_day_even_late_in_utc() {
        // 2026-11-26T18:00Z is already Friday 27 Nov in Vietnam.
        let r = rules();
        let due = r.due_at(
            at("2026-11-26T18:00:00Z"),
            &addr("1", "01"),
            &addr("1", "01"),
            false,
        );
        assert_eq!(due, at("2026-11-30T23:59:59+07:00"));
    }

    #[test]
    fn tet_2026_holidays_are_skipped() {
        // Friday 13 Feb 2026 + 2: Mon 16 – Fri 20 are Tết, so Mon 23 and Tue 24.
        let r = rules();
        let due = r.due_at(
            at("2026-02-13T09:00:00+07:00"),
            &addr("1", "79"),
            &addr("2", "79"),
            false,
        );
        assert_eq!(due, at("2026-02-24T23:59:59+07:00"));
    }

    #[test]
    fn make_up_saturdays_count() {
        // Friday 8 May 2026 + 1: Saturday 9 May is a make-up working day.
        let r = rules();
        let due = r.due_at(
            at("2026-05-08T09:00:00+07:00"),
            &addr("1", "01"),
            &addr("1", "01"),
            false,
        );
        assert_eq!(due, at("2026-05-09T23:59:59+07:00"));
    }

    #[test]
    fn the_year_end_and_reunification_days_are_crossed() {
        let r = rules();
        // Thursday 31 Dec 2026 + 1: Friday 1 Jan 2027 is a holiday although no
        // 2027 day is configured, so Monday 4 Jan.
        let due = r.due_at(
            at("2026-12-31T09:00:00+07:00"),
            &addr("1", "01"),
            &addr("1", "01"),
            false,
        );
        assert_eq!(due, at("2027-01-04T23:59:59+07:00"));
        // Wednesday 29 Apr 2026 + 2: 30 Apr and 1 May are holidays, then the weekend.
        let due = r.due_at(
            at("2026-04-29T09:00:00+07:00"),
            &addr("1", "79"),
            &addr("2", "79"),
            false,
        );
        assert_eq!(due, at("2026-05-05T23:59:59+07:00"));
    }

    fn unconfigured() -> SlaRules {
        SlaRules {
            calendar: Calendar::default(),
            ..rules()
        }
    }

    #[test]
    fn tet_2027_is_skipped_with_no_configuration() {
        // Tết 2027 is Saturday 6 Feb: Fri 5 – Tue 9 off, and Wed 10 – Thu 11
        // in compensation for the weekend. Thursday 4 Feb + 1 = Friday 12 Feb.
        let due = unconfigured().due_at(
            at("2027-02-04T09:00:00+07:00"),
            &addr("1", "01"),
            &addr("1", "01"),
            false,
        );
        assert_eq!(due, at("2027-02-12T23:59:59+07:00"));
    }

    #[test]
    fn tet_2030_follows_the_vietnamese_lunar_calendar() {
        // Tết 2030 is Saturday 2 Feb in Vietnam (Sunday 3 Feb in China): Fri 1
        // – Tue 5 off, Wed 6 – Thu 7 in compensation. Thursday 31 Jan + 1 is
        // Friday 8 Feb (by the Chinese calendar it would be Friday 1 Feb).
        let due = unconfigured().due_at(
            at("2030-01-31T09:00:00+07:00"),
            &addr("1", "01"),
            &addr("1", "01"),
            false,
        );
        assert_eq!(due, at("2030-02-08T23:59:59+07:00"));
        // Hùng Kings' day 2030 is Friday 12 Apr: Thursday 11 Apr + 1 = Monday 15.
        let due = unconfigured().due_at(
            at("2030-04-11T09:00:00+07:00"),
            &addr("1", "01"),
            &addr("1", "01"),
            false,
        );
        assert_eq!(due, at("2030-04-15T23:59:59+07:00"));
    }

    #[test]
    fn a_make_up_day_wins_over_a_statutory_holiday() {
        let cal = Calendar::new(&[date(2024, 2, 8)], &[date(2024, 2, 15)]);
        assert!(!cal.is_working_day(date(2024, 2, 8)), "decreed day off");
        assert!(
            cal.is_working_day(date(2024, 2, 15)),
            "decreed back to work"
        );
        assert!(!Calendar::default().is_working_day(date(2024, 2, 15)));
    }

    #[test]
    fn the_calendar_reaches_the_end_of_its_latest_year() {
        assert_eq!(rules().calendar.last_day(), Some(date(2026, 12, 31)));
        assert_eq!(Calendar::default().last_day(), None);
    }
}
