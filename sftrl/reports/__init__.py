"""What the jobs write for people to read, computed from the runs' own files.

    pipeline    the pipeline's report.md (and summary numbers)
    study       the study's report.md, one section per question of the seed document
    plots       the pipeline report's figures
    html        report.html: a report's Markdown as one self-contained page
    eval_table  the model table of `sftrl eval` (eval.md), which the pipeline report shows too
    human_eval  human evaluation: the blind A/B sheet, the ratings, their score
    common      JSONL reading, matplotlib, safe Markdown cells, versions
"""
