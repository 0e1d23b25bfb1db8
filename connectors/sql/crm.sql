-- CRM source schema, shaped like the Salesforce objects pssync reads (Account, Opportunity).
-- Custom fields keep Salesforce's __c suffix so mappings read like the real org.
CREATE SCHEMA IF NOT EXISTS sales;

CREATE TABLE IF NOT EXISTS sales.account (
    id                   varchar(18) PRIMARY KEY,
    name                 text        NOT NULL,
    type                 text,
    industry             text,
    billing_country      char(2),
    currency_iso_code    char(3)     NOT NULL DEFAULT 'USD',
    tax_id__c            text,
    erp_customer_id__c   text,
    created_date         timestamptz NOT NULL DEFAULT now(),
    last_modified_date   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS sales.opportunity (
    id                       varchar(18) PRIMARY KEY,
    account_id               varchar(18) REFERENCES sales.account (id),
    name                     text        NOT NULL,
    stage_name               text        NOT NULL,
    amount                   numeric(18, 2),
    currency_iso_code        char(3)     NOT NULL DEFAULT 'USD',
    close_date               date,
    probability              numeric(5, 2),
    is_closed                boolean     NOT NULL DEFAULT false,
    is_won                   boolean     NOT NULL DEFAULT false,
    billing_type__c          text,
    delivery_region__c       text,
    project_manager_email__c text,
    sow_reference__c         text,
    service_lines__c         text,
    created_date             timestamptz NOT NULL DEFAULT now(),
    last_modified_date       timestamptz NOT NULL DEFAULT now()
);

-- Fields pssync writes back (stand-ins for the org's custom fields). Their change data comes
-- back through CDC and is recognized as pssync's own echo.
ALTER TABLE sales.opportunity ADD COLUMN IF NOT EXISTS project_code__c text;
ALTER TABLE sales.opportunity ADD COLUMN IF NOT EXISTS psa_project_url__c text;
ALTER TABLE sales.opportunity ADD COLUMN IF NOT EXISTS sync_status__c text;
ALTER TABLE sales.opportunity ADD COLUMN IF NOT EXISTS sync_error__c text;
ALTER TABLE sales.opportunity ADD COLUMN IF NOT EXISTS last_synced_at__c timestamptz;

-- The write-back's own role (PSSYNC_CRM_WRITEBACK_URL): it finds rows by id, reads and
-- updates exactly the fields pssync owns (reads: to skip writes that change nothing), and
-- nothing else. Roles are per server: created once, granted
-- in every CRM database this file is applied to.
DO $$
BEGIN
    CREATE ROLE pssync_crm_writeback LOGIN;
EXCEPTION
    -- Already there, or created at the same moment by another database's setup.
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;
GRANT USAGE ON SCHEMA sales TO pssync_crm_writeback;
GRANT SELECT (id, erp_customer_id__c), UPDATE (erp_customer_id__c)
    ON sales.account TO pssync_crm_writeback;
GRANT SELECT (id, project_code__c, psa_project_url__c, sync_status__c, sync_error__c,
              last_synced_at__c),
      UPDATE (project_code__c, psa_project_url__c, sync_status__c, sync_error__c,
              last_synced_at__c)
    ON sales.opportunity TO pssync_crm_writeback;
