//! Paired rounds: every command run is followed at once by the database's single-row INSERT
//! limit at the same concurrency, and the throughput ratio is taken within each pair.
//!
//! The machines this runs on are shared virtual machines whose speed drifts within minutes:
//! in session 13 the same binary measured 6,357 to 13,000 single-row INSERTs/s in one hour,
//! and its command rate moved with it. A command rate and a database limit measured minutes
//! apart then compare two different machines, and a ratio of 1.2 or 1.5 for one build said
//! more about the neighbours than about the code. Within one pair both are measured seconds
//! apart. The report keeps every pair and shows the round whose ratio is the median, so that
//! neither a lucky nor an unlucky round decides the target.

use crate::cpu::CpuUse;
use crate::report;
use crate::workload::RunResult;

/// One command run and the database limit measured right after it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Round {
    pub commands_per_s: f64,
    pub p99_ms: f64,
    pub single_insert_per_s: f64,
    /// What a command cost the machine in the command run.
    pub command_cpu: OpCpu,
    /// What a single-row INSERT cost it.
    pub single_insert_cpu: OpCpu,
}

/// The machine's CPU time per operation in a window, and how busy the machine was.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpCpu {
    /// Microseconds of CPU per operation (see [`CpuUse::us_per_op`]).
    pub us: f64,
    /// Busy share of all cores, 0–1.
    pub busy: f64,
}

impl OpCpu {
    pub fn of(cpu: &CpuUse, per_s: f64) -> Self {
        Self {
            us: cpu.us_per_op(per_s),
            busy: cpu.machine_busy,
        }
    }
}

impl Round {
    /// Commands per second over single-row INSERTs per second of the same round.
    pub fn ratio(&self) -> f64 {
        report::ratio(self.commands_per_s, self.single_insert_per_s)
    }

    /// The most CPU a command may cost, in microseconds, for `ratio` × this round's
    /// single-row rate on `cores` cores kept busy all the time: the budget behind a target
    /// ratio, to set beside [`Round::command_cpu`]. Zero without a limit.
    pub fn budget_us(&self, ratio: f64, cores: usize) -> f64 {
        let needed = ratio * self.single_insert_per_s;
        if needed > 0.0 {
            cores as f64 * 1e6 / needed
        } else {
            0.0
        }
    }
}

/// Every round of one client count as its run, the single-row rate measured after it and
/// that measurement's CPU: answers the round with the median ratio, with the pairs of all of
/// them. `None` for no rounds.
pub fn median_of(runs: Vec<(RunResult, f64, CpuUse)>) -> Option<(RunResult, f64, Vec<Round>)> {
    let pairs: Vec<Round> = runs
        .iter()
        .map(|(run, single, single_cpu)| Round {
            commands_per_s: run.per_second(),
            p99_ms: run.p99_ms(),
            single_insert_per_s: *single,
            command_cpu: OpCpu::of(&run.cpu, run.per_second()),
            single_insert_cpu: OpCpu::of(single_cpu, *single),
        })
        .collect();
    let median = median_index(&pairs)?;
    let (run, single, _) = runs.into_iter().nth(median)?;
    Some((run, single, pairs))
}

/// The index of the round with the median ratio: the middle one, or the lower of the two
/// middle ones for an even count, so that the chosen round is one that was measured rather
/// than an average of two. `None` for no rounds.
pub fn median_index(rounds: &[Round]) -> Option<usize> {
    if rounds.is_empty() {
        return None;
    }
    let mut order: Vec<usize> = (0..rounds.len()).collect();
    order.sort_by(|&a, &b| rounds[a].ratio().total_cmp(&rounds[b].ratio()));
    Some(order[(rounds.len() - 1) / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(commands: f64, single: f64) -> Round {
        Round {
            commands_per_s: commands,
            p99_ms: 1.0,
            single_insert_per_s: single,
            command_cpu: OpCpu {
                us: 50.0,
                busy: 0.7,
            },
            single_insert_cpu: OpCpu {
                us: 75.0,
                busy: 0.9,
            },
        }
    }

    #[test]
    fn the_median_round_is_chosen_by_its_ratio_not_by_its_command_rate() {
        // Ratios 1.5, 1.0, 2.0: the fastest command run (20,000/s) has the middle ratio
        // only because its database limit was also the highest.
        let rounds = [
            round(15_000.0, 10_000.0),
            round(8_000.0, 8_000.0),
            round(20_000.0, 10_000.0),
        ];
        assert_eq!(median_index(&rounds), Some(0));
    }

    #[test]
    fn with_an_even_count_the_lower_middle_round_is_chosen() {
        let rounds = [
            round(30.0, 10.0),
            round(10.0, 10.0),
            round(40.0, 10.0),
            round(20.0, 10.0),
        ];
        assert_eq!(median_index(&rounds), Some(3));
    }

    #[test]
    fn a_single_round_is_its_own_median_and_no_rounds_have_none() {
        assert_eq!(median_index(&[round(1.0, 2.0)]), Some(0));
        assert_eq!(median_index(&[]), None);
    }

    #[test]
    fn a_round_without_a_database_limit_has_a_ratio_of_zero_rather_than_infinity() {
        assert_eq!(round(100.0, 0.0).ratio(), 0.0);
    }

    #[test]
    fn the_budget_is_the_cores_time_shared_by_the_commands_the_ratio_needs() {
        // 2 x 25,000 INSERTs/s on 2 cores: 2,000,000 µs a second over 50,000 commands.
        assert_eq!(round(30_000.0, 25_000.0).budget_us(2.0, 2), 40.0);
        assert_eq!(round(30_000.0, 0.0).budget_us(2.0, 2), 0.0);
    }

    #[test]
    fn a_window_half_busy_on_two_cores_at_ten_thousand_a_second_costs_a_hundred_us_each() {
        let cpu = CpuUse {
            cores: 2,
            machine_busy: 0.5,
            ..CpuUse::default()
        };
        assert_eq!(
            OpCpu::of(&cpu, 10_000.0),
            OpCpu {
                us: 100.0,
                busy: 0.5
            }
        );
        assert_eq!(OpCpu::of(&cpu, 0.0).us, 0.0);
    }
}
