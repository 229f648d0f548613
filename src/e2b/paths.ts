/** Where the gateway's surfaces live on prismd's port. */
export const E2B_PREFIX = '/e2b';
export const ENVD_PREFIX = '/e2b/envd';
