// One error class for every reason injection refuses a workload, with a stable code. The CLI
// prints `file: document N (Kind name): message` and exits 1; the webhook denies the pod with the
// same message, so a typo in an annotation reads the same wherever it is caught.

export type InjectErrorCode =
  | 'bad-annotation' // an annotation's value is not one sluice accepts
  | 'port-conflict' // an app container already uses a port the sidecar needs, or two sidecar ports clash
  | 'name-conflict' // a volume sluice adds already exists under that name
  | 'bad-workload'; // the object is a workload kind, but not a well-formed one (no containers...)

export class InjectError extends Error {
  readonly code: InjectErrorCode;
  constructor(code: InjectErrorCode, message: string) {
    super(message);
    this.name = 'InjectError';
    this.code = code;
  }
}
