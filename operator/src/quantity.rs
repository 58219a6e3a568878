//! Arithmetic on Kubernetes resource quantities ("500m", "4", "16Gi", "1.5").
//!
//! Quantities are held as exact milli-units (`Amount`): CPU in millicores, memory in
//! thousandths of a byte, pod counts in thousandths. That keeps sums and comparisons exact
//! and formats back to the notation people expect.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// An exact quantity in milli-units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(pub i128);

/// A string that is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a resource quantity")]
pub struct ParseError(pub String);

impl Amount {
    pub const ZERO: Amount = Amount(0);

    /// Parses the Kubernetes quantity syntax: exactly the language of the API server's
    /// `resource.ParseQuantity` (and of `api::common::QUANTITY_PATTERN`): a signed decimal
    /// number, then nothing, a binary suffix (`Ki` .. `Ei`), a decimal suffix (`n`, `u`, `m`,
    /// `k`, `M` .. `E`) or a decimal exponent (`e3`, `E-2`). Precision beyond a milli-unit is
    /// rounded up, as Kubernetes does; magnitudes beyond what an `i128` of milli-units holds
    /// saturate.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let err = || ParseError(text.to_string());
        let (negative, s) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let number_end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, suffix) = s.split_at(number_end);
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        if int_part.is_empty() && frac_part.is_empty() || frac_part.contains('.') {
            return Err(err());
        }
        // The number as an integer mantissa with a decimal exponent.
        let digits = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        let mut exp10: i64 = -(frac_part.len() as i64);
        let mut factor: i128 = 1;
        match suffix {
            "" => {}
            "n" => exp10 -= 9,
            "u" => exp10 -= 6,
            "m" => exp10 -= 3,
            "k" => exp10 += 3,
            "M" => exp10 += 6,
            "G" => exp10 += 9,
            "T" => exp10 += 12,
            "P" => exp10 += 15,
            "E" => exp10 += 18,
            "Ki" => factor = 1 << 10,
            "Mi" => factor = 1 << 20,
            "Gi" => factor = 1 << 30,
            "Ti" => factor = 1 << 40,
            "Pi" => factor = 1 << 50,
            "Ei" => factor = 1 << 60,
            other => {
                let exponent = other.strip_prefix(['e', 'E']).ok_or_else(err)?;
                let unsigned = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
                if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err());
                }
                exp10 = exp10.saturating_add(
                    exponent
                        .parse::<i64>()
                        .unwrap_or(i64::MAX)
                        .clamp(-1000, 1000),
                );
            }
        }
        // milli-units: multiply by 1000.
        exp10 += 3;
        if digits.is_empty() {
            return Ok(Amount::ZERO);
        }
        let value = if exp10 >= 0 {
            // Too large for an i128 of milli-units: saturate, as Kubernetes caps.
            let scale = u32::try_from(exp10)
                .ok()
                .and_then(|e| 10i128.checked_pow(e));
            digits
                .parse::<i128>()
                .ok()
                .and_then(|m| m.checked_mul(factor))
                .zip(scale)
                .and_then(|(m, scale)| m.checked_mul(scale))
                .unwrap_or(i128::MAX)
        } else {
            // Round up to a milli-unit, as Kubernetes does for precision beyond it.
            let shift = usize::try_from(-exp10).unwrap_or(usize::MAX);
            let kept = digits.len().saturating_sub(shift);
            let (whole, dropped) = digits.split_at(kept);
            let whole: i128 = if whole.is_empty() {
                0
            } else {
                whole.parse().map_err(|_| err())?
            };
            let round_up = dropped.bytes().any(|b| b != b'0');
            // A binary factor with a fractional mantissa: multiply first, then scale.
            if factor != 1 {
                let mantissa: i128 = digits.parse().map_err(|_| err())?;
                let div = u32::try_from(-exp10)
                    .ok()
                    .and_then(|e| 10i128.checked_pow(e));
                match (mantissa.checked_mul(factor), div) {
                    (Some(m), Some(div)) => (m + div - 1) / div,
                    _ => i128::MAX,
                }
            } else {
                whole.saturating_add(i128::from(round_up))
            }
        };
        Ok(Amount(if negative { -value } else { value }))
    }

    /// Parses a `Quantity`.
    pub fn of(quantity: &Quantity) -> Result<Self, ParseError> {
        Self::parse(&quantity.0)
    }

    /// Formats CPU: whole cores as "4", otherwise millicores as "1500m".
    pub fn to_cpu(self) -> Quantity {
        if self.0 % 1000 == 0 {
            Quantity(format!("{}", self.0 / 1000))
        } else {
            Quantity(format!("{}m", self.0))
        }
    }

    /// Formats memory in the largest binary unit that divides it exactly ("16Gi", "1536Mi").
    pub fn to_memory(self) -> Quantity {
        let bytes = self.0.div_euclid(1000);
        for (suffix, unit) in [
            ("Ti", 1i128 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ] {
            if bytes != 0 && bytes % unit == 0 {
                return Quantity(format!("{}{suffix}", bytes / unit));
            }
        }
        Quantity(format!("{bytes}"))
    }

    /// Formats a count ("12").
    pub fn to_count(self) -> Quantity {
        Quantity(format!("{}", self.0.div_euclid(1000)))
    }

    /// Formats the amount for `resource` ("cpu", "memory", anything else as a count).
    pub fn to_quantity(self, resource: &str) -> Quantity {
        match resource {
            "cpu" | "requests.cpu" | "limits.cpu" => self.to_cpu(),
            "memory" | "requests.memory" | "limits.memory" => self.to_memory(),
            _ => self.to_count(),
        }
    }

    /// A whole number of units (pods), in milli-units.
    pub fn count(n: i64) -> Self {
        Amount(i128::from(n) * 1000)
    }

    pub fn saturating_sub(self, other: Amount) -> Amount {
        Amount((self.0 - other.0).max(0))
    }

    /// `self` as a percentage of `whole` (0 when `whole` is 0), rounded down.
    pub fn percent_of(self, whole: Amount) -> i32 {
        if whole.0 <= 0 {
            return 0;
        }
        i32::try_from(self.0 * 100 / whole.0).unwrap_or(i32::MAX)
    }
}

impl std::ops::Add for Amount {
    type Output = Amount;
    fn add(self, other: Amount) -> Amount {
        Amount(self.0 + other.0)
    }
}

impl std::ops::AddAssign for Amount {
    fn add_assign(&mut self, other: Amount) {
        self.0 += other.0;
    }
}

impl std::iter::Sum for Amount {
    fn sum<I: Iterator<Item = Amount>>(iter: I) -> Amount {
        iter.fold(Amount::ZERO, |a, b| a + b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_notations_people_write() {
        assert_eq!(Amount::parse("500m"), Ok(Amount(500)));
        assert_eq!(Amount::parse("4"), Ok(Amount(4000)));
        assert_eq!(Amount::parse("1.5"), Ok(Amount(1500)));
        assert_eq!(Amount::parse(".5"), Ok(Amount(500)));
        assert_eq!(Amount::parse("2k"), Ok(Amount(2_000_000)));
        assert_eq!(Amount::parse("1Ki"), Ok(Amount(1024 * 1000)));
        assert_eq!(Amount::parse("16Gi"), Ok(Amount(16 * (1 << 30) * 1000)));
        assert_eq!(Amount::parse("1e3"), Ok(Amount(1_000_000)));
        assert_eq!(Amount::parse("-4Gi"), Ok(Amount(-4 * (1 << 30) * 1000)));
        assert_eq!(
            Amount::parse("0.1m"),
            Ok(Amount(1)),
            "rounded up to a milli-unit"
        );
        assert_eq!(Amount::parse("1n"), Ok(Amount(1)), "nano rounds up");
        assert_eq!(Amount::parse("2000000u"), Ok(Amount(2000)));
        assert_eq!(Amount::parse("1.5Gi"), Ok(Amount(1536 * (1 << 20) * 1000)));
        assert_eq!(Amount::parse("5E-1"), Ok(Amount(500)));
        assert_eq!(Amount::parse("1E"), Ok(Amount(10i128.pow(21))));
        assert_eq!(Amount::parse("1."), Ok(Amount(1000)));
        assert_eq!(Amount::parse("+.5"), Ok(Amount(500)));
        assert_eq!(Amount::parse("1e100"), Ok(Amount(i128::MAX)), "saturates");
        for bad in [
            "",
            "lots",
            "1.5 cores",
            "4 Gi",
            "Gi",
            "1x",
            ".",
            " 1",
            "1e",
            "1e1.5",
            "1K",
            "1.2.3",
            "--1",
            "1ki",
            "e3",
        ] {
            assert!(Amount::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn formats_back_in_the_usual_units() {
        assert_eq!(
            Amount::parse("1500m").map(Amount::to_cpu),
            Ok(Quantity("1500m".into()))
        );
        assert_eq!(
            Amount::parse("2000m").map(Amount::to_cpu),
            Ok(Quantity("2".into()))
        );
        assert_eq!(
            Amount::parse("1.5Gi").map(Amount::to_memory),
            Ok(Quantity("1536Mi".into()))
        );
        assert_eq!(
            Amount::parse("64Gi").map(Amount::to_memory),
            Ok(Quantity("64Gi".into()))
        );
        assert_eq!(
            Amount::parse("1000").map(Amount::to_memory),
            Ok(Quantity("1000".into()))
        );
        assert_eq!(Amount::count(12).to_count(), Quantity("12".into()));
    }

    #[test]
    fn sums_and_percentages_are_exact() {
        let total: Amount = ["250m", "250m", "500m"]
            .iter()
            .map(|q| Amount::parse(q).unwrap_or_default())
            .sum();
        assert_eq!(total, Amount(1000));
        assert_eq!(Amount(250).percent_of(Amount(1000)), 25);
        assert_eq!(Amount(1).percent_of(Amount::ZERO), 0);
    }
}
