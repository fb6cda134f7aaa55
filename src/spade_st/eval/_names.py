"""Names of the evaluation choices (no heavy imports: the CLI's parser reads them)."""

#: the long result table of every evaluation (bench, evaluate, demo): one row per measured value. ``seed`` is
#: the repetition (a pretraining seed), ``fold`` the split within it (a held-out patient, a few-shot draw
#: ``shots<i>``, a test split ``rep<i>``); columns a task does not use are empty.
RESULT_COLUMNS = ("task", "source", "probe", "target", "metric", "k", "seed", "fold", "value")
#: the columns a summary groups by (mean and interval over seeds and folds)
SUMMARY_KEYS = ["task", "source", "probe", "target", "metric", "k"]
TARGETS = ("log1p", "cp10k")  #: gene targets: log1p of raw counts (HEST-Benchmark's) and log1p CP10k
PROBES = ("hest_ridge", "ridge_cv")  #: gene probes: the HEST-Benchmark ridge and a ridge with alpha by group CV
PROTOCOLS = ("within_patient", "leave_one_patient_out")  #: gene-expression fold protocols
#: her2st bench model variants: name -> overrides of the pretraining config
VARIANTS = {"spade": {}, "single_expert": {"n_experts": 1}, "one_epoch": {"epochs": 1}}
