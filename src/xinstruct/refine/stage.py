"""Stage II in the run: k rounds of grading candidates (best / flawed / worst), keeping the best, retraining."""

from __future__ import annotations

import shutil
from pathlib import Path

from xinstruct.core.stage import Stage, StageResult


class RefineStage(Stage):
    name = "refine"
    title = ("k rounds of grading candidates (best / flawed / worst), keeping the best and retraining "
             "(resumes mid-round; rounds finished with the same inputs are skipped)")
    needs = ("seed", "generate")
    config = ("languages", "refine")
    code = ("refine", "models", "prompts", "train")
    uses_limit = True

    def inputs(self) -> dict:
        from xinstruct.models.identity import model_identity

        out = {"evaluator_model": model_identity(self.cfg.refine.evaluator.model)}
        if self.cfg.refine.retrain in ("generator", "both"):  # it retrains the generator and generates again
            from xinstruct.core.fingerprint import config_section
            out["regenerate"] = {k: config_section(self.cfg, k) for k in ("train", "generator", "generate")}
        return out

    def outputs(self) -> list[Path]:
        return [self.layout.refined_file(lang) for lang in self.cfg.languages]

    def clear(self) -> None:
        shutil.rmtree(self.layout.refine, ignore_errors=True)

    def run(self) -> StageResult:
        from xinstruct.refine.loop import run_refinement

        summary = run_refinement(self.cfg, self.ctx, self.fingerprint, self.work_fingerprint)
        last = summary["iterations"][-1] if summary["iterations"] else {}
        unresolved = sum(s.get("errors", {}).get("backend_error", 0) for lang, s in last.items()
                         if isinstance(s, dict) and lang in self.cfg.languages)
        return StageResult(summary, {"refine:backend_error": unresolved} if unresolved else {})
