"""Experiments that measure the stages (the research wing): they use the stages and are used by none of them.

- eval_evaluator.py: `xinstruct eval-evaluator`, the grader's quality on held-out FLORES rating pairs;
- noise.py: mismatched pairs mixed into known-good ones, graded alone or through the refine stage
  (benchmarks/bench_noise.py).
"""
