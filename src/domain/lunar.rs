//! The Vietnamese lunisolar calendar (âm lịch), after Hồ Ngọc Đức's
//! astronomical method: a month starts on the day (at UTC+7) of the new moon,
//! month 11 holds the winter solstice, and in a year of 13 months the first
//! month after month 11 without a major solar term is the leap month.
//!
//! Reckoning at UTC+7 rather than UTC+8 is what makes it differ from the
//! Chinese calendar in some years (Tết 1985 and 2007). The new moon and sun
//! longitude series are the short ones of Meeus' "Astronomical Algorithms",
//! good to a few minutes for the years this crate covers.

use std::f64::consts::PI;

use jiff::civil::Date;

/// The first solar year whose lunar dates are promised.
pub const FIRST_YEAR: i16 = 1900;
/// The last solar year whose lunar dates are promised.
pub const LAST_YEAR: i16 = 2199;

/// Vietnam's offset from UTC, in days.
const TIME_ZONE: f64 = 7.0 / 24.0;
/// The mean synodic month, in days.
const SYNODIC_MONTH: f64 = 29.530588853;
/// Julian day of the first new moon of 1900 (new moon number 0).
const NEW_MOON_EPOCH: f64 = 2415021.076998695;
/// Julian day number of 1970-01-01.
const UNIX_EPOCH_JDN: i64 = 2_440_588;

/// A day of the lunar calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LunarDate {
    /// The lunar year, named by the solar year in which it starts.
    pub year: i16,
    /// 1 to 12.
    pub month: u8,
    /// 1 to 30.
    pub day: u8,
    /// Whether `month` is the leap (intercalary) month repeating it.
    pub leap: bool,
}

/// The Julian day number of a date.
fn jdn(d: Date) -> i64 {
    i64::from((d - Date::constant(1970, 1, 1)).get_days()) + UNIX_EPOCH_JDN
}

/// The date of a Julian day number.
fn date_of(jdn: i64) -> Date {
    let days = jiff::Span::new().days(jdn - UNIX_EPOCH_JDN);
    Date::constant(1970, 1, 1)
        .checked_add(days)
        .expect("lunar dates stay within jiff's range")
}

/// The Julian day (UT) of new moon number `k` counted from January 1900.
fn new_moon(k: i64) -> f64 {
    let k = k as f64;
    let t = k / 1236.85;
    let t2 = t * t;
    let t3 = t2 * t;
    let rad = |deg: f64| (deg * PI / 180.0).sin();
    let mean = 2415020.75933 + 29.53058868 * k + 0.0001178 * t2 - 0.000000155 * t3
        + 0.00033 * rad(166.56 + 132.87 * t - 0.009173 * t2);
    // Anomalies of the sun (m) and the moon (mp), and the moon's argument of latitude (f).
    let m = 359.2242 + 29.10535608 * k - 0.0000333 * t2 - 0.00000347 * t3;
    let mp = 306.0253 + 385.81691806 * k + 0.0107306 * t2 + 0.00001236 * t3;
    let f = 21.2964 + 390.67050646 * k - 0.0016528 * t2 - 0.00000239 * t3;
    let correction = (0.1734 - 0.000393 * t) * rad(m) + 0.0021 * rad(2.0 * m) - 0.4068 * rad(mp)
        + 0.0161 * rad(2.0 * mp)
        - 0.0004 * rad(3.0 * mp)
        + 0.0104 * rad(2.0 * f)
        - 0.0051 * rad(m + mp)
        - 0.0074 * rad(m - mp)
        + 0.0004 * rad(2.0 * f + m)
        - 0.0004 * rad(2.0 * f - m)
        - 0.0006 * rad(2.0 * f + mp)
        + 0.0010 * rad(2.0 * f - mp)
        + 0.0005 * rad(2.0 * mp + m);
    // ΔT, terrestrial minus universal time, in days.
    let delta_t = if t < -11.0 {
        0.001 + 0.000839 * t + 0.0002261 * t2 - 0.00000845 * t3 - 0.000000081 * t * t3
    } else {
        -0.000278 + 0.000265 * t + 0.000262 * t2
    };
    mean + correction - delta_t
}

/// The Julian day number of the Vietnam day on which new moon `k` falls.
fn new_moon_day(k: i64) -> i64 {
    (new_moon(k) + 0.5 + TIME_ZONE).floor() as i64
}

/// The sun's apparent longitude, in radians in [0, 2π), at Julian day `jd`.
fn sun_longitude(jd: f64) -> f64 {
    let t = (jd - 2451545.0) / 36525.0;
    let t2 = t * t;
    let dr = PI / 180.0;
    let m = 357.52910 + 35999.05030 * t - 0.0001559 * t2 - 0.00000048 * t * t2;
    let l0 = 280.46645 + 36000.76983 * t + 0.0003032 * t2;
    let dl = (1.914600 - 0.004817 * t - 0.000014 * t2) * (dr * m).sin()
        + (0.019993 - 0.000101 * t) * (dr * 2.0 * m).sin()
        + 0.000290 * (dr * 3.0 * m).sin();
    ((l0 + dl) * dr).rem_euclid(2.0 * PI)
}

/// Which 30° sector (0 to 11) the sun is in at the start of a Vietnam day;
/// sector 9 starts at the winter solstice.
fn sun_sector(day: i64) -> i64 {
    (sun_longitude(day as f64 - 0.5 - TIME_ZONE) / PI * 6.0).floor() as i64
}

/// The first day of the 11th lunar month (the one holding the winter
/// solstice) of solar year `year`, as a Julian day number.
fn month_11_start(year: i16) -> i64 {
    let k = ((jdn(Date::constant(year, 12, 31)) - 2415021) as f64 / SYNODIC_MONTH).floor() as i64;
    let start = new_moon_day(k);
    if sun_sector(start) >= 9 {
        new_moon_day(k - 1)
    } else {
        start
    }
}

/// The index of the month number in the lunar count of new moons.
fn lunation(day: i64) -> i64 {
    ((day as f64 - NEW_MOON_EPOCH) / SYNODIC_MONTH + 0.5).floor() as i64
}

/// In a 13-month year starting at month 11 on `a11`: how many months after
/// month 11 the leap month comes (the first month holding no major term).
fn leap_month_offset(a11: i64) -> i64 {
    let k = lunation(a11);
    let mut i = 1;
    let mut sector = sun_sector(new_moon_day(k + i));
    loop {
        let last = sector;
        i += 1;
        sector = sun_sector(new_moon_day(k + i));
        if sector == last || i >= 14 {
            return i - 1;
        }
    }
}

/// The lunar date of a solar (Gregorian) date.
pub fn from_solar(d: Date) -> LunarDate {
    let day = jdn(d);
    let k = ((day as f64 - NEW_MOON_EPOCH) / SYNODIC_MONTH).floor() as i64;
    let mut month_start = new_moon_day(k + 1);
    if month_start > day {
        month_start = new_moon_day(k);
    }
    // The mean lunation can run ahead of the true new moon reckoned at
    // UTC+7 by more than a day (2062-04-09 is the last day of a month whose
    // estimate lands on the next one): step back until the month contains
    // the day.
    let mut k = k;
    while month_start > day {
        k -= 1;
        month_start = new_moon_day(k);
    }
    let (mut year, a11, b11) = {
        let this = month_11_start(d.year());
        if this >= month_start {
            (d.year(), month_11_start(d.year() - 1), this)
        } else {
            (d.year() + 1, this, month_11_start(d.year() + 1))
        }
    };
    let diff = (month_start - a11) / 29;
    let mut leap = false;
    let mut month = diff + 11;
    if b11 - a11 > 365 {
        let leap_offset = leap_month_offset(a11);
        if diff >= leap_offset {
            month = diff + 10;
            leap = diff == leap_offset;
        }
    }
    if month > 12 {
        month -= 12;
    }
    if month >= 11 && diff < 4 {
        year -= 1;
    }
    LunarDate {
        year,
        month: u8::try_from(month).expect("a lunar month is 1 to 12"),
        day: u8::try_from(day - month_start + 1).expect("a lunar day is 1 to 30"),
        leap,
    }
}

/// The solar date of a lunar date; `None` when that date does not exist (a
/// leap month the year lacks, or day 30 of a 29-day month).
pub fn to_solar(l: LunarDate) -> Option<Date> {
    if !(1..=12).contains(&l.month) || !(1..=30).contains(&l.day) {
        return None;
    }
    let (a11, b11) = if l.month < 11 {
        (month_11_start(l.year - 1), month_11_start(l.year))
    } else {
        (month_11_start(l.year), month_11_start(l.year + 1))
    };
    let mut offset = (i64::from(l.month) + 12 - 11) % 12;
    if b11 - a11 > 365 {
        let leap_offset = leap_month_offset(a11);
        let leap_month = (leap_offset - 2).rem_euclid(12);
        if l.leap && i64::from(l.month) != leap_month {
            return None;
        }
        if l.leap || offset >= leap_offset {
            offset += 1;
        }
    } else if l.leap {
        return None;
    }
    let k = lunation(a11);
    let start = new_moon_day(k + offset);
    let day = start + i64::from(l.day) - 1;
    (day < new_moon_day(k + offset + 1)).then(|| date_of(day))
}

/// Tết Nguyên đán: the solar date of the first day of lunar year `year`.
pub fn new_year(year: i16) -> Date {
    to_solar(LunarDate {
        year,
        month: 1,
        day: 1,
        leap: false,
    })
    .expect("every lunar year has a first day")
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    #[test]
    fn a_day_whose_mean_lunation_runs_ahead_is_in_the_month_before() {
        // Found by the round-trip property: the estimate put this day in
        // the month starting the next day, as day 0.
        let l = from_solar(date(2062, 4, 9));
        assert!((29..=30).contains(&l.day), "{l:?}");
        assert_eq!((l.year, l.month, l.leap), (2062, 2, false), "{l:?}");
        assert_eq!(to_solar(l), Some(date(2062, 4, 9)));
        assert_eq!(from_solar(date(2062, 4, 10)).day, 1);
    }

    /// Tết (lunar new year's day) in Vietnam, 2000–2040.
    const TET: [(i16, i8, i8); 41] = [
        (2000, 2, 5),
        (2001, 1, 24),
        (2002, 2, 12),
        (2003, 2, 1),
        (2004, 1, 22),
        (2005, 2, 9),
        (2006, 1, 29),
        (2007, 2, 17),
        (2008, 2, 7),
        (2009, 1, 26),
        (2010, 2, 14),
        (2011, 2, 3),
        (2012, 1, 23),
        (2013, 2, 10),
        (2014, 1, 31),
        (2015, 2, 19),
        (2016, 2, 8),
        (2017, 1, 28),
        (2018, 2, 16),
        (2019, 2, 5),
        (2020, 1, 25),
        (2021, 2, 12),
        (2022, 2, 1),
        (2023, 1, 22),
        (2024, 2, 10),
        (2025, 1, 29),
        (2026, 2, 17),
        (2027, 2, 6),
        (2028, 1, 26),
        (2029, 2, 13),
        (2030, 2, 2), // China: 3 Feb
        (2031, 1, 23),
        (2032, 2, 11),
        (2033, 1, 31),
        (2034, 2, 19),
        (2035, 2, 8),
        (2036, 1, 28),
        (2037, 2, 15),
        (2038, 2, 4),
        (2039, 1, 24),
        (2040, 2, 12),
    ];

    #[test]
    fn tet_falls_on_the_known_days_2000_to_2040() {
        for (y, m, d) in TET {
            assert_eq!(new_year(y), date(y, m, d), "Tết {y}");
            assert_eq!(
                from_solar(date(y, m, d)),
                LunarDate {
                    year: y,
                    month: 1,
                    day: 1,
                    leap: false
                }
            );
        }
    }

    #[test]
    fn vietnam_and_china_differ_where_utc_7_moves_the_new_moon() {
        // China (UTC+8): 18 Feb 2007, 20 Feb 1985 and 3 Feb 2030. The 2030
        // new moon is at 16:07 UTC on 2 Feb: 23:07 in Hà Nội, 00:07 in Beijing.
        assert_eq!(new_year(2007), date(2007, 2, 17));
        assert_eq!(new_year(1985), date(1985, 1, 21));
        assert_eq!(new_year(2030), date(2030, 2, 2));
    }

    #[test]
    fn hung_kings_day_is_the_10th_of_the_3rd_month() {
        let hung = |year| {
            to_solar(LunarDate {
                year,
                month: 3,
                day: 10,
                leap: false,
            })
        };
        assert_eq!(hung(2024), Some(date(2024, 4, 18)));
        assert_eq!(hung(2025), Some(date(2025, 4, 7)));
        assert_eq!(hung(2026), Some(date(2026, 4, 26)));
    }

    #[test]
    fn leap_months_are_found() {
        // 2023 repeated the 2nd month (from 22 Mar 2023), 2025 the 6th (from 25 Jul 2025).
        assert_eq!(
            from_solar(date(2023, 3, 22)),
            LunarDate {
                year: 2023,
                month: 2,
                day: 1,
                leap: true
            }
        );
        assert_eq!(
            from_solar(date(2025, 7, 25)),
            LunarDate {
                year: 2025,
                month: 6,
                day: 1,
                leap: true
            }
        );
        let no_such = LunarDate {
            year: 2024,
            month: 6,
            day: 1,
            leap: true,
        };
        assert_eq!(to_solar(no_such), None);
    }

    /// Every day of the range, not a sample: a sampled property let the
    /// 2062-04-09 case through in most runs.
    #[test]
    fn every_solar_day_round_trips_through_the_lunar_calendar() {
        // 1900-01-31 (Tết 1900) to 2199-12-31.
        let first = jdn(date(1900, 1, 31));
        for day in first..first + 109_542 {
            let d = date_of(day);
            let l = from_solar(d);
            assert_eq!(to_solar(l), Some(d), "{l:?}");
            assert!((1..=30).contains(&l.day), "{d}: {l:?}");
        }
    }
}
